"""Power cuts under export: every request completed, and no completion ever contradicted, on a
disk that forgets whatever was not synced.

Export's ``state_dir`` (its ledger of completions, SQLite, and the working directory of
fetched objects) is on the power-loss file system (tests/support/power_loss_fs.py); RabbitMQ,
S3 and the two storescp destinations are real and keep everything, as remote services do.
Before each cut a batch of requests (2 to 6 stored instances each, to one or both
destinations) is published, and the test cuts the power at a moment drawn from the seed: SIGKILL
of export, the file system rolled back to what was durable, mounted again, export started on
what it kept. The moments, watched from outside every millisecond:

* mid-send: an instance just arrived at a destination while a request is under way (at once,
  or up to 20 ms later);
* a completion recorded: in the ledger and not yet on the bus (its publish and confirm under
  way);
* a completion published: it just arrived on the bus (the request's acknowledgement under
  way).

Each cut must keep every completion the ledger held when export was killed (read after the
kill, before the cut, as :func:`tests.support.power_cuts.read_only` says), unchanged. Then,
every service running, each request must have a completion under its own event id, with an
outcome for each instance at each destination it named; every instance reported sent must be
on its destination byte for byte; and every request published again must get exactly the
completion it got before (the ledger's, with its times and outcomes: a completion lost in a
cut would make export carry the request out anew). A short run
(CI) makes :data:`SHORT_RUN_CUTS` cuts; ``GATEWAY_TEST_POWER_CUTS`` sets the number for a
release check (docs/reliability.md). The seed is printed and a failure names it;
``GATEWAY_TEST_SEED`` replays its choices (exactly where a cut lands within its moment is
timing).
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pytest

from contracts.cloudevent import export_completed_event_id
from contracts.export import ExportRequested
from gateway_client.testing import GatewayProcess, TestServices
from tests.support.amqp import MessageBuffer
from tests.support.export import Export, completed, destination, export_harness, new_export_id
from tests.support.export_reconciliation import Stored, check_completions, received_by
from tests.support.ingest import RABBITMQ_S3, Ingest
from tests.support.net import wait_until
from tests.support.power_cuts import read_only, schedule
from tests.support.power_loss_fs import PowerLossFs
from tests.support.power_loss_model import Losses
from tests.support.storescp import Storescp

#: Stored instances the requests pick from.
STORED = 24
#: Requests published before each cut.
REQUESTS_EACH_CUT = 6
#: How long a cut waits for its moment (a batch brings each within a second).
MOMENT_SECONDS = 20.0
#: Once the last cut is over, how long the last completions may take.
SETTLE_SECONDS = 120.0
#: How often the moment is looked for: a completion is published a few ms after it is recorded.
WATCH_INTERVAL = 0.001
#: The latest a mid-send cut lands after the instance that announced it.
MID_SEND_LATEST = 0.02


class Moment(StrEnum):
    MID_SEND = "mid-send"
    RECORDED = "a completion recorded"
    PUBLISHED = "a completion published"


#: Cuts in the short run: each moment once.
SHORT_RUN_CUTS = len(Moment)

#: Event id to the completion's body, as the ledger holds them.
Completions = dict[str, bytes]


def ledger_completions(db: sqlite3.Connection) -> Completions:
    return {row[0]: bytes(row[1]) for row in db.execute("SELECT event_id, body FROM completed")}


def kept_completions(ledger: Path) -> Completions:
    """What the ledger holds after a cut."""
    if not ledger.exists():
        return {}  # the cut took the whole ledger (the directory it is in was never synced)
    with read_only(ledger) as db:
        return ledger_completions(db)


@dataclass(frozen=True)
class Cut:
    """One power cut: its moment, what export was doing, what the file system undid, and the
    recorded completions it lost or changed (none may be)."""

    moment: Moment
    delay: float
    outstanding: int
    recorded: int
    unpublished: int
    losses: Losses
    lost: frozenset[str]

    def __str__(self) -> str:
        return (
            f"{self.moment} +{self.delay * 1000:.1f} ms ({self.outstanding} requests "
            f"outstanding, {self.recorded} completions recorded, {self.unpublished} of them "
            f"not on the bus; undone: {self.losses.names_lost} names, "
            f"{self.losses.names_back} unlinks, {self.losses.files_rolled_back} files' "
            f"contents; {len(self.lost)} recorded completions lost)"
        )


@dataclass
class PowerCuts:
    """Cuts the power under export at a moment the test sees coming, and brings it back on
    what was kept."""

    process: GatewayProcess
    fs: PowerLossFs
    ledger: Path
    completions: MessageBuffer
    destinations: list[Storescp]
    rng: random.Random
    requests: list[ExportRequested] = field(default_factory=list)
    cuts: list[Cut] = field(default_factory=list)

    def published(self) -> set[str]:
        """Event ids of the completions on the bus so far."""
        return {m.message_id for m in self.completions.messages if m.message_id}

    def outstanding(self) -> set[str]:
        return {export_completed_event_id(r.export_id) for r in self.requests} - self.published()

    def last_arrival(self) -> int:
        """When a destination last wrote an instance (ns). Not how many files there are:
        storescp writes an instance sent again over its earlier file."""
        return max(
            (f.stat().st_mtime_ns for d in self.destinations for f in d.received_files()), default=0
        )

    def cut(
        self, moment: Moment, batch: list[ExportRequested], publish: Callable[..., None]
    ) -> None:
        """Publish ``batch``, wait for ``moment``, cut."""
        arrived, announced = self.last_arrival(), len(self.published())
        # Attached across the kill: what it reads after it is what export had recorded.
        with read_only(self.ledger) as db:
            recorded_before = ledger_completions(db).keys()

            def reached() -> bool:
                match moment:
                    case Moment.MID_SEND:
                        return self.last_arrival() > arrived and bool(self.outstanding())
                    case Moment.RECORDED:
                        recorded = ledger_completions(db).keys()
                        return bool(recorded - recorded_before - self.published())
                    case Moment.PUBLISHED:
                        return len(self.published()) > announced

            publish(*batch)
            self.requests += batch
            try:
                wait_until(reached, MOMENT_SECONDS, str(moment), interval=WATCH_INTERVAL)
            except TimeoutError:
                raise AssertionError(
                    f"{moment} not reached within {MOMENT_SECONDS:g} s\n{self.process.log_tail()}"
                ) from None
            delay = 0.0
            if moment is Moment.MID_SEND and self.rng.random() < 0.5:
                delay = self.rng.uniform(0, MID_SEND_LATEST)
                time.sleep(delay)  # where the cut lands in the send, not a wait for readiness
            self.process.kill_all()
            before = ledger_completions(db)
        # (Closed now: a reader on the mount would hold the cut up.) What the broker confirmed
        # before the kill reaches the collector after it.
        self.completions.catch_up(timeout=10)
        outstanding, published = len(self.outstanding()), self.published()
        losses = self.fs.cut()
        self.fs.mount()
        after = kept_completions(self.ledger)
        lost = frozenset(
            event_id for event_id, body in before.items() if after.get(event_id) != body
        )
        self.process.start()
        unpublished = len(before.keys() - published)
        self.cuts.append(Cut(moment, delay, outstanding, len(before), unpublished, losses, lost))


@pytest.fixture
def export(ingest: Ingest, tmp_path: Path) -> Iterator[Export]:
    with export_harness(ingest, tmp_path) as harness:
        yield harness


@pytest.mark.backends(RABBITMQ_S3)
def test_power_cuts_complete_every_request_and_never_contradict_a_completion(  # noqa: PLR0917
    power_fs: PowerLossFs,
    ingest: Ingest,
    export: Export,
    inbox: Path,
    tmp_path: Path,
    test_services: TestServices,
    seed: int,
) -> None:
    rng = random.Random(seed)
    stored = Stored.put(export, inbox, seed, STORED)
    state_dir = power_fs.mountpoint / "export-state"
    moments = schedule(rng, list(Moment), test_services.power_cuts or SHORT_RUN_CUTS)
    with ExitStack() as stack:
        destinations = {
            name: stack.enter_context(Storescp(tmp_path / name, ae_title=name.upper()))
            for name in ("first", "second")
        }
        completions = stack.enter_context(export.completions())
        config = export.config(
            [destination(name, scp.port, scp.ae_title) for name, scp in destinations.items()],
            state_dir=str(state_dir),
        )
        process = export.start(config)
        # Stopped before the mount goes (the fixture's): a process on it holds the unmount up.
        stack.callback(process.stop, 15)
        power = PowerCuts(
            process,
            power_fs,
            state_dir / "ledger.sqlite3",
            completions,
            list(destinations.values()),
            rng,
        )
        started = time.monotonic()
        for moment in moments:
            batch = [
                ExportRequested(
                    export_id=new_export_id(),
                    destinations=tuple(rng.sample(sorted(destinations), rng.choice([1, 2]))),
                    object_keys=tuple(rng.sample(stored.keys, rng.randint(2, 6))),
                )
                for _ in range(REQUESTS_EACH_CUT)
            ]
            power.cut(moment, batch, export.publish)
        cuts_over = time.monotonic()
        try:
            wait_until(lambda: not power.outstanding(), SETTLE_SECONDS, "every request completed")
        except TimeoutError:
            raise AssertionError(
                f"seed {seed}: {len(power.outstanding())} of {len(power.requests)} requests "
                f"not completed\n{process.log_tail()}"
            ) from None
        settled_after = time.monotonic() - cuts_over
        first_round = Counter(m.message_id for m in completions.messages)
        # Each request again: its completion must come back as the ledger kept it.
        export.publish(*power.requests)
        wait_until(
            lambda: (
                Counter(m.message_id for m in completions.messages) - first_round
                >= Counter(first_round.keys())
            ),
            SETTLE_SECONDS,
            "every request completed again",
        )
        messages = completions.wait_for(len(completions.messages))
        outcomes = check_completions(
            power.requests, messages, stored, received_by(destinations), seed
        )

    # Each export's completions, as (event id, body): one version only, however often published.
    versions: dict[str, set[tuple[str | None, bytes]]] = {}
    for message in messages:
        versions.setdefault(completed(message).export_id, set()).add(
            (message.message_id, message.body)
        )
    contradicted = sorted(export_id for export_id, seen in versions.items() if len(seen) > 1)
    summary = (
        f"seed {seed}: {len(power.cuts)} cuts in {cuts_over - started:.1f} s, "
        f"{len(power.requests)} requests, {sum(first_round.values())} completions before they "
        f"were published again ({sum(first_round.values()) - len(first_round)} repeated), "
        f"{len(messages)} in all; {len(contradicted)} export ids with differing completions; "
        f"instances {dict(outcomes)}; all completed {settled_after:.1f} s after the last cut; "
        f"cuts:\n" + "\n".join(f"  {cut}" for cut in power.cuts)
    )
    print(summary)
    assert not [cut for cut in power.cuts if cut.lost], f"recorded completions lost: {summary}"
    assert not contradicted, f"completions contradicted: {contradicted}: {summary}"
    expected = {export_completed_event_id(r.export_id) for r in power.requests}
    assert set(first_round) == expected, summary
    # The cuts happened, and met requests under way.
    assert [cut.moment for cut in power.cuts] == moments, summary
    assert all(cut.outstanding for cut in power.cuts), summary
    assert outcomes["first sent"], summary
    assert outcomes["second sent"], summary
