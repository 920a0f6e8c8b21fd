"""Randomized fault injection on export: every request gets a completion, and no instance is
reported sent that its destination did not receive, byte for byte.

Requests (2 to 6 stored instances each, to one or both of two destinations) are published in
a stream while the test, in an order drawn from a seed, cuts RabbitMQ, S3 or the link to one
destination (TCP links it stops and restores, which resets open associations mid-C-STORE),
stops the other destination's storescp for a while, and kills the export service with
SIGKILL and restarts it. Then, with everything back, each completion is checked against
what the destinations wrote. The seed is printed and a failure names it; ``GATEWAY_TEST_SEED``
replays it (:mod:`tests.support.seed`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import ExitStack
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from contracts.export import ExportRequested
from gateway_client.testing import GatewayProcess
from tests.support.export import Export, completed, destination, export_harness, new_export_id
from tests.support.export_reconciliation import Stored, check_completions, received_by
from tests.support.ingest import RABBITMQ_S3, Ingest
from tests.support.link import Link
from tests.support.net import free_port, wait_until
from tests.support.storescp import Storescp

#: Stored instances the requests pick from.
STORED = 24
#: Requests published before each fault.
REQUESTS_EACH_ROUND = 6
#: What export logs when a request has to wait for S3 (export/consumer.py).
PUT_BACK = "put back for later"
#: How long an S3 outage waits for a request's fetch to meet it.
MOMENT_SECONDS = 30.0
#: Once every fault is over, how long the last completions may take.
SETTLE_SECONDS = 120.0


class Fault(StrEnum):
    CUT_BROKER = "cut-broker"
    CUT_STORAGE = "cut-storage"
    CUT_DESTINATION = "cut-destination"
    DESTINATION_DOWN = "destination-down"
    KILL = "kill"


#: Each fault this many times, in an order drawn from the seed.
ROUNDS_EACH = 2


@pytest.fixture
def export(ingest: Ingest, tmp_path: Path) -> Iterator[Export]:
    with export_harness(ingest, tmp_path) as harness:
        yield harness


class Destinations:
    """Two storescp receivers: ``linked`` behind a link the test cuts, ``direct`` stopped and
    started again on the same port and directory."""

    def __init__(self, directory: Path, stack: ExitStack) -> None:
        self.directory = directory
        self.linked = stack.enter_context(Storescp(directory / "linked", ae_title="LINKED"))
        self.link = stack.enter_context(Link("127.0.0.1", self.linked.port))
        self.direct_port = free_port()
        self.direct = self._start_direct()
        stack.callback(self.stop_direct)  # whichever storescp runs then

    def config(self) -> list[dict[str, Any]]:
        return [
            destination("linked", self.link.port, "LINKED"),
            destination("direct", self.direct_port, "DIRECT"),
        ]

    def _start_direct(self) -> Storescp:
        return Storescp(self.directory / "direct", self.direct_port, ae_title="DIRECT").__enter__()

    def stop_direct(self) -> None:
        self.direct.stop()

    def restart_direct(self, down_seconds: float) -> None:
        self.direct.stop()
        time.sleep(down_seconds)  # the outage itself, not a wait for readiness
        self.direct = self._start_direct()

    def received(self) -> dict[str, dict[str, bytes]]:
        """Per destination, SOP Instance UID to the data set bytes it wrote."""
        return received_by({"linked": self.linked, "direct": self.direct})


@pytest.mark.backends(RABBITMQ_S3)
def test_random_faults_complete_every_request_and_report_only_what_arrived(
    ingest: Ingest, export: Export, inbox: Path, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    stored = Stored.put(export, inbox, seed, STORED)
    schedule = [fault for fault in Fault for _ in range(ROUNDS_EACH)]
    rng.shuffle(schedule)
    requests: list[ExportRequested] = []
    outstanding_at_kills = []

    broker_host, _, rest = ingest.amqp_url.split("@")[-1].partition(":")
    storage_host, storage_port = ingest.s3.endpoint.rsplit(":", 1)
    with ExitStack() as stack:
        destinations = Destinations(tmp_path, stack)
        broker = stack.enter_context(Link(broker_host, int(rest.partition("/")[0] or 5672)))
        storage = stack.enter_context(Link(storage_host, int(storage_port)))
        completions = stack.enter_context(export.completions())
        config = export.config(destinations.config())
        credentials, _, path = ingest.amqp_url.partition("@")
        config["broker"]["url"] = f"{credentials}@{broker.endpoint}/{path.partition('/')[2]}"
        config["storage"]["endpoint"] = storage.endpoint
        process = export.start(config)

        def completed_ids() -> set[str]:
            return {completed(m).export_id for m in completions.messages}

        def outstanding() -> set[str]:
            return {r.export_id for r in requests} - completed_ids()

        for fault in schedule:
            put_back = process.log_text().count(PUT_BACK)
            if fault is Fault.CUT_STORAGE:
                storage.cut()  # before the batch, so that its requests' fetches meet the outage
            batch = [
                ExportRequested(
                    export_id=new_export_id(),
                    destinations=tuple(rng.sample(["linked", "direct"], rng.choice([1, 2]))),
                    object_keys=tuple(rng.sample(stored.keys, rng.randint(2, 6))),
                )
                for _ in range(REQUESTS_EACH_ROUND)
            ]
            export.publish(*batch)
            requests += batch
            delay = rng.uniform(0, 0.3)  # the fault comes while requests are under way
            if fault is Fault.KILL:
                # A round's requests can all be done within the delay; the kill then comes
                # while the last one is still under way instead.
                def moment_to_kill(until: float = time.monotonic() + delay) -> bool:
                    return time.monotonic() >= until or len(outstanding()) <= 1

                wait_until(moment_to_kill, 1.0, "the moment to kill", interval=0.002)
                outstanding_at_kills.append(len(outstanding()))
            else:
                time.sleep(delay)
            _inflict(fault, rng, process, broker, storage, destinations, put_back)
        try:
            wait_until(
                lambda: completed_ids() >= {r.export_id for r in requests},
                SETTLE_SECONDS,
                "every request completed",
            )
        except TimeoutError:
            raise AssertionError(
                f"seed {seed}: {len(requests)} requests, {len(completed_ids())} completed\n"
                f"{process.log_tail()}"
            ) from None
        messages = completions.wait_for(len(completions.messages))
        # Only a window shows that completions have stopped coming: delivery is at least once,
        # so a request redelivered by a fault may rightly be completed again (export holds such
        # a copy for REQUEUE_PAUSE_SECONDS first), and no state says "never again".
        completions.assert_quiet(2)
        outcomes = check_completions(requests, messages, stored, destinations.received(), seed)

    summary = (
        f"seed {seed}: {len(requests)} requests, {len(messages)} completions "
        f"({len(messages) - len(requests)} repeated), instances {dict(outcomes)}, "
        f"outstanding at the kills {outstanding_at_kills}"
    )
    print(summary)
    assert outcomes["linked sent"] > 0, summary
    assert outcomes["direct sent"] > 0, summary
    # The kills met requests under way (and each S3 outage waited for a fetch to meet it).
    assert all(outstanding_at_kills), summary


def _inflict(  # noqa: PLR0917 (the test's pieces, named)
    fault: Fault,
    rng: random.Random,
    process: GatewayProcess,
    broker: Link,
    storage: Link,
    destinations: Destinations,
    put_back: int,
) -> None:
    """Inflict ``fault``; ``put_back`` is how many requests had been put back for S3 before
    the batch that the fault meets (for an S3 outage, already begun)."""
    outage = rng.uniform(0.5, 2.0)
    match fault:
        case Fault.CUT_BROKER | Fault.CUT_DESTINATION:
            link = broker if fault is Fault.CUT_BROKER else destinations.link
            link.cut()
            time.sleep(outage)  # the outage itself, not a wait for readiness
            link.restore()
        case Fault.CUT_STORAGE:
            wait_until(
                lambda: process.log_text().count(PUT_BACK) > put_back,
                MOMENT_SECONDS,
                "a request put back for the S3 outage",
            )
            time.sleep(outage)
            storage.restore()
        case Fault.DESTINATION_DOWN:
            destinations.restart_direct(outage)
        case Fault.KILL:
            process.kill()
            process.start()
