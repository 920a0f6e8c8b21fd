"""Receive limits against the real service: one peer cannot hold the spool for everybody else.

Before them, a C-STORE that streamed fragments and never sent its last grew to 240 MB of a
300 MB spool and then trickled; every other association was turned away as congestion for as
long as it went on. Now an instance that would cross the watermark, or a limit per instance or
per association, is refused with 0xA700 while it arrives (its space given back at once, the
association going on), and a peer that trickles mid-instance is aborted; honest senders beside
them are served (ingest/receive_limits.py, docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.dicom_status import Status
from gateway_client.testing import GatewayProcess
from tests.support import dcmtk
from tests.support.factories import CT_IMAGE_STORAGE, ct_series, derived_uid, small_data_set
from tests.support.ingest import EMBEDDED, RABBITMQ_S3, Ingest, released
from tests.support.net import wait_until
from tests.support.raw_scu import Aborted, DataSet, RawAssociation
from tests.support.settled import wait_until_handed_on
from tests.support.small_fs import small_filesystem

CT = str(CT_IMAGE_STORAGE)
#: One P-DATA-TF's worth of an endless data set; not all zeros.
FRAGMENT = bytes(range(256)) * 256
#: How long one answer may take.
ANSWER_SECONDS = 15.0
MODES = ("one-process", "two-workers", "plain")


def start(ingest: Ingest, mode: str, **settings: Any) -> GatewayProcess:
    """A gateway in ``mode``: one process, two worker processes, or on pynetdicom's own upper
    layer (where pynetdicom, not the fast path, writes each data set)."""
    config = ingest.config(**settings, **({"workers": 2} if mode == "two-workers" else {}))
    if mode == "plain":
        config["netdicom"] = "plain"
    return ingest.start(config)


def used_fraction(directory: Path) -> float:
    usage = shutil.disk_usage(directory)
    return usage.used / usage.total


@pytest.fixture
def small_spool(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB filesystem for the spool (needs root)."""
    with small_filesystem(tmp_path / "spool", "64m") as spool:
        yield spool


class EndlessStore:
    """A peer that streams one C-STORE's data set without end, in a thread of its own: as
    fast as it can until ``slow_down`` is set, then 64 KiB every 20 ms (well above any minimum
    rate) until ``finish`` is set; then it sends the last fragment, reads the answer, stores
    one small instance on the same association and releases it."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self._gateway = gateway
        self.slow_down = threading.Event()
        self.finish = threading.Event()
        self.sent = 0
        self.statuses: tuple[int, int] | None = None
        self.small = small_data_set(0, seed=17)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> EndlessStore:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.finish.set()
        self._thread.join(ANSWER_SECONDS * 3)

    async def _run(self) -> None:
        association = await RawAssociation.open(
            self._gateway.host, self._gateway.port, "GATEWAY", "ENDLESS", [CT]
        )
        context = await association.send_store_command(CT, str(derived_uid("endless")))
        while not self.finish.is_set():
            await association.send_data_set_fragment(context, FRAGMENT, last=False)
            self.sent += len(FRAGMENT)
            if self.slow_down.is_set():
                await asyncio.sleep(0.02)
        await association.send_data_set_fragment(context, b"", last=True)
        endless = await asyncio.wait_for(association.response_status(), ANSWER_SECONDS)
        small = DataSet(CT, self.small.uids.sop_instance, self.small.encoded)
        after = await asyncio.wait_for(association.store(small), ANSWER_SECONDS)
        await association.release()
        self.statuses = (endless, after)


@pytest.mark.backends(RABBITMQ_S3)
@pytest.mark.parametrize("mode", MODES)
def test_an_endless_c_store_is_refused_at_the_watermark_and_honest_senders_are_served(
    ingest: Ingest, inbox: Path, small_spool: Path, mode: str
) -> None:
    gateway = start(ingest, mode, storage_watermark_percent=50, reserved_storage_gb=0)
    honest = ct_series(inbox, 3, rows=256, cols=256)
    with ingest.events() as events, EndlessStore(gateway) as endless:
        wait_until(lambda: "limit=spool_watermark" in gateway.log_text(), 30, "the refusal")
        endless.slow_down.set()
        # Its file is emptied at once, though the peer streams on.
        wait_until(lambda: used_fraction(small_spool) < 0.1, 5, "the space given back")
        started = time.monotonic()
        dcmtk.storescu(gateway.host, gateway.port, [i.path for i in honest], "GATEWAY").check()
        honest_seconds = time.monotonic() - started
        (honest_event,) = events.wait_for(1)
        streamed = endless.sent
        wait_until(lambda: endless.sent > streamed, 5, "the endless C-STORE still streaming")
        endless.finish.set()
        wait_until(lambda: endless.statuses is not None, ANSWER_SECONDS * 2, "the endless answer")
        assert endless.statuses == (Status.OUT_OF_RESOURCES, Status.SUCCESS)
        (_, endless_event) = events.wait_for(2)
    assert {i.sop_instance_uid for i in released(honest_event).instances} == {
        i.uids.sop_instance for i in honest
    }
    assert [i.sop_instance_uid for i in released(endless_event).instances] == [
        endless.small.uids.sop_instance
    ]
    assert (
        'receive_limits_crossed_total{limit="spool_watermark"} 1.0'
        in (gateway.http_get("/metrics")[1])
    )
    wait_until_handed_on(small_spool)
    assert ingest.spool_files() == []
    (refusal,) = re.findall(r"limit=spool_watermark\): (.*) \(calling=", gateway.log_text())
    print(
        f"\n[{mode}] {refusal}; {endless.sent / 2**20:.0f} MiB streamed in all; "
        f"the honest association took {honest_seconds:.2f} s"
    )


@pytest.mark.backends(EMBEDDED)
def test_an_instance_over_its_limit_is_refused_and_the_association_goes_on(
    ingest: Ingest, inbox: Path
) -> None:
    gateway = ingest.start(max_instance_bytes="1 MiB")
    (big,) = ct_series(inbox, 1, rows=1024, cols=1024, seed=1)  # 2 MiB of pixels
    small = ct_series(inbox, 2, seed=2)
    with ingest.events() as events:
        result = dcmtk.storescu(
            gateway.host,
            gateway.port,
            [big.path, *(s.path for s in small)],
            "GATEWAY",
            extra_args=["-v", "--no-halt"],  # go on after a refusal, as modalities do
        )
        assert result.returncode == 0
        assert "Refused: OutOfResources" in result.stdout + result.stderr
        (message,) = events.wait_for(1)
    assert {i.sop_instance_uid for i in released(message).instances} == {
        s.uids.sop_instance for s in small
    }
    assert "the instance passed max_instance_bytes (1048576)" in gateway.log_text()
    wait_until_handed_on(ingest.workdir / "spool")
    assert ingest.spool_files() == []


@pytest.mark.backends(EMBEDDED)
@pytest.mark.parametrize("limit", ["instances", "bytes"])
def test_an_association_over_its_limit_has_its_later_instances_refused(
    ingest: Ingest, inbox: Path, limit: str
) -> None:
    series = ct_series(inbox, 3, rows=256, cols=256, seed=3)
    sizes = [s.path.stat().st_size for s in series]
    settings: dict[str, Any] = (
        {"max_association_instances": 2}
        if limit == "instances"
        else {"max_association_bytes": sizes[0] + sizes[1] + sizes[2] // 2}
    )
    gateway = ingest.start(**settings)
    with ingest.events() as events:
        result = dcmtk.storescu(
            gateway.host,
            gateway.port,
            [s.path for s in series],
            "GATEWAY",
            extra_args=["-v", "--no-halt"],
        )
        assert "Refused: OutOfResources" in result.stdout + result.stderr
        (message,) = events.wait_for(1)
        # The next association starts afresh.
        dcmtk.storescu(gateway.host, gateway.port, [series[2].path], "GATEWAY").check()
        events.wait_for(2)
    assert [i.sop_instance_uid for i in released(message).instances] == [
        s.uids.sop_instance for s in series[:2]
    ]
    assert f"max_association_{limit}" in gateway.log_text()


async def trickle(gateway: GatewayProcess, trickling: threading.Event) -> float:
    """Send 256 KiB of a data set, then 1 KiB every 0.25 s, until the service ends the
    association; how long the trickle lasted."""
    association = await RawAssociation.open(gateway.host, gateway.port, "GATEWAY", "TRICKLE", [CT])
    context = await association.send_store_command(CT, str(derived_uid("trickle")))
    for _ in range(4):  # in PDUs within the negotiated maximum (256 KiB)
        await association.send_data_set_fragment(context, FRAGMENT, last=False)
    started = time.monotonic()
    trickling.set()
    answer = asyncio.ensure_future(association.response_status())
    try:
        while not answer.done() and time.monotonic() - started < 60:
            try:
                await association.send_data_set_fragment(context, FRAGMENT[:1024], last=False)
            except ConnectionError:
                break  # it is gone: the answer says how
            await asyncio.wait([answer], timeout=0.25)
        with pytest.raises(Aborted):
            await asyncio.wait_for(answer, ANSWER_SECONDS)
    finally:
        await association.close()
    return time.monotonic() - started


@pytest.mark.backends(EMBEDDED)
@pytest.mark.parametrize("mode", MODES)
def test_a_trickling_peer_is_aborted_within_the_window_and_others_are_served(
    ingest: Ingest, inbox: Path, mode: str
) -> None:
    window = 2.0
    network_timeout = 30.0  # far longer: the trickle, not silence, ends it
    gateway = start(
        ingest,
        mode,
        min_receive_bytes_per_second="64 KiB",
        receive_rate_window_seconds=window,
        network_timeout_seconds=network_timeout,
    )
    honest = ct_series(inbox, 3, seed=4)
    lasted: list[float] = []
    trickling = threading.Event()
    trickler = threading.Thread(
        target=lambda: lasted.append(asyncio.run(trickle(gateway, trickling)))
    )
    with ingest.events() as events:
        trickler.start()
        assert trickling.wait(ANSWER_SECONDS)
        dcmtk.storescu(gateway.host, gateway.port, [i.path for i in honest], "GATEWAY").check()
        (message,) = events.wait_for(1)
        trickler.join(network_timeout)
        assert released(message).instance_count == 3
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()  # nothing for the aborted one
    (seconds,) = lasted
    # A whole window of trickle after the burst left it, a slot of the window, and the
    # association thread's next look at its timers (0.5 s).
    assert seconds < window + window / 6 + 2.0
    log = gateway.log_text()
    assert "below min_receive_bytes_per_second (65536)" in log
    assert " aborted: " in log
    assert ingest.spool_files() == []
    print(f"\n[{mode}] the trickling peer was aborted {seconds:.2f} s into its trickle")
