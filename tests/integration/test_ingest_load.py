"""Load: 1,000 associations at once, each served or turned away cleanly, C-ECHO answered
throughout, memory bounded.

With ``workers = 2``, as for any site where many senders connect at once: a single process
served the same burst too, in 17 to 75 s, but some senders then waited longer than a
minute for their association to be accepted (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom.uid import ImplicitVRLittleEndian

from gateway.dicom_status import Status
from gateway_client.testing import GatewayProcess
from tests.support.factories import ct_series, data_set_bytes, file_meta_length
from tests.support.ingest import RABBITMQ_S3, Ingest, released
from tests.support.proc import child_pids, memory_kib
from tests.support.raw_scu import Aborted, DataSet, RawAssociation, Rejected
from tests.support.settled import wait_until_handed_on

ASSOCIATIONS = 1000
INSTANCES_EACH = 2
#: A-ASSOCIATE-RJ rejected-transient / service-provider (presentation) / local-limit-exceeded.
LIMIT_REACHED = (2, 3, 2)
#: Every step of a sender's association must be answered within this.
ANSWER_SECONDS = 60.0
#: How long a C-ECHO (association, echo, release) may take while the load runs: its request
#: waits behind those of the burst (about 10 s on 2 cores).
ECHO_SECONDS = 30.0
ECHO_INTERVAL_SECONDS = 0.5
#: The ingest processes' peak RSS together: about 1,000 associations' threads and buffers.
PEAK_RSS_LIMIT_MIB = 1024
WORKERS = 2


@dataclass
class LoadResult:
    outcomes: list[str | tuple[int, int, int]] = field(default_factory=list)
    echo_seconds: list[float] = field(default_factory=list)
    echo_rejections: int = 0
    echo_wrong_rejections: int = 0
    echo_failures: list[str] = field(default_factory=list)


async def _send(
    gateway: GatewayProcess, index: int, data_sets: list[DataSet]
) -> str | tuple[int, int, int]:
    """One sender: its outcome ("released", a rejection, or what went wrong)."""
    try:
        association = await asyncio.wait_for(
            RawAssociation.open(
                gateway.host,
                gateway.port,
                "GATEWAY",
                f"LOAD{index:04d}",
                [data_sets[0].sop_class_uid],
            ),
            ANSWER_SECONDS,
        )
    except Rejected as exc:
        return exc.rejection
    except (Aborted, OSError, TimeoutError) as exc:
        return f"association failed: {exc!r}"
    try:
        for data_set in data_sets:
            status = await asyncio.wait_for(association.store(data_set), ANSWER_SECONDS)
            if status != Status.SUCCESS:
                await association.abort()
                return f"C-STORE status {status:#06x}"
        await asyncio.wait_for(association.release(), ANSWER_SECONDS)
    except (Aborted, OSError, TimeoutError) as exc:
        await association.close()
        return f"association broke: {exc!r}"
    return "released"


async def _echo_until(gateway: GatewayProcess, done: asyncio.Event, result: LoadResult) -> None:
    loop = asyncio.get_running_loop()
    while not done.is_set():
        started = loop.time()
        try:
            association = await asyncio.wait_for(
                RawAssociation.open(gateway.host, gateway.port, "GATEWAY", "ECHOER"),
                ECHO_SECONDS,
            )
            assert await asyncio.wait_for(association.echo(), ECHO_SECONDS) == Status.SUCCESS
            await asyncio.wait_for(association.release(), ECHO_SECONDS)
        except Rejected as exc:  # answered: turned away while all places are taken
            result.echo_rejections += 1
            result.echo_wrong_rejections += exc.rejection != LIMIT_REACHED
        except (Aborted, OSError, TimeoutError) as exc:
            result.echo_failures.append(f"{loop.time() - started:.1f} s: {exc!r}")
        result.echo_seconds.append(loop.time() - started)
        await asyncio.sleep(ECHO_INTERVAL_SECONDS)


async def _load(gateway: GatewayProcess, data_sets: list[DataSet]) -> LoadResult:
    result = LoadResult()
    done = asyncio.Event()
    echoes = asyncio.create_task(_echo_until(gateway, done, result))
    result.outcomes = list(
        await asyncio.gather(*(_send(gateway, i, data_sets) for i in range(ASSOCIATIONS)))
    )
    done.set()
    await echoes
    return result


@pytest.mark.alone
@pytest.mark.backends(RABBITMQ_S3)
def test_a_thousand_simultaneous_associations_are_served_or_turned_away_cleanly(
    ingest: Ingest, inbox: Path
) -> None:
    gateway = ingest.start(max_associations=ASSOCIATIONS, workers=WORKERS)
    series = ct_series(
        inbox, INSTANCES_EACH, rows=8, cols=8, transfer_syntax=ImplicitVRLittleEndian
    )
    data_sets = [
        DataSet(s.uids.sop_class, s.uids.sop_instance, data_set_bytes(s.path)) for s in series
    ]
    with ingest.events() as events:
        result = asyncio.run(_load(gateway, data_sets))
        print(_summary(result))
        problems = [o for o in result.outcomes if o not in ("released", LIMIT_REACHED)]
        assert problems == [], f"{len(problems)} senders failed, e.g. {problems[:5]}"
        served = result.outcomes.count("released")
        # Only the echo associations can hold places that the senders need.
        assert served >= ASSOCIATIONS - 1, f"only {served} served"
        messages = events.wait_for(served, timeout=600)
        wait_until_handed_on(ingest.workdir / "spool", timeout=60)
        events.assert_no_more()

    assert result.echo_seconds, "no C-ECHO was tried while the load ran"
    assert result.echo_failures == []
    assert max(result.echo_seconds) < ECHO_SECONDS
    assert result.echo_wrong_rejections == 0
    assert gateway.pid is not None
    processes = [gateway.pid, *child_pids(gateway.pid)]
    assert len(processes) == 1 + WORKERS
    peak_mib = sum(memory_kib(pid, "VmHWM") for pid in processes) / 1024
    assert peak_mib < PEAK_RSS_LIMIT_MIB

    data = [released(m) for m in messages]
    assert len({d.association_id for d in data}) == served
    assert len({d.calling_ae_title for d in data}) == served
    assert all(d.instance_count == INSTANCES_EACH for d in data)
    # Byte for byte, a sample (all 2,000 objects would take the S3 server a while).
    objects = ingest.objects_named(
        [i.object_key for d in random.Random(7).sample(data, 20) for i in d.instances]
    )
    expected = {d.sop_instance_uid: d.encoded for d in data_sets}
    for key, stored in objects.items():
        uid = key.rsplit("/", 1)[1].removesuffix(".dcm")
        assert stored[file_meta_length(stored) :] == expected[uid]
    assert ingest.spool_files() == []
    print(f"peak RSS {peak_mib:.0f} MiB")


def _summary(result: LoadResult) -> str:
    outcomes: dict[str, int] = {}
    for outcome in result.outcomes:
        key = str(outcome) if isinstance(outcome, tuple) else outcome.split(":")[0]
        outcomes[key] = outcomes.get(key, 0) + 1
    return (
        f"senders: {outcomes}; C-ECHO: {len(result.echo_seconds)} tries, "
        f"{result.echo_rejections} turned away, slowest {max(result.echo_seconds, default=0):.2f}"
        f" s, failures {result.echo_failures[:3]}"
    )
