"""Power cuts at random moments: nothing a sender saw released is lost or altered, nothing
aborted is handed on, nothing is left behind, on a disk that forgets whatever was not synced.

Everything the service keeps on disk is on the power-loss file system
(tests/support/power_loss_fs.py; what it models is in tests/support/power_loss_model.py): the
spool and its journal, with real RabbitMQ and S3; on the embedded backends also the local
event log (SQLite) and the object files. Four senders (tests/support/fault_senders.py) send
without pause while the test, at moments drawn from a seed, cuts the power: SIGKILL of the
whole service (the main process and its workers at once), then the file system rolled back to
what was durable, mounted again, and the service started on what it kept. Each moment is a
stage a sender enters, and half of the cuts strike as it does, from the senders' own thread
(within microseconds), the others a little later:

* mid-C-STORE: a C-STORE sent, its answer not in (up to 5 ms later: the gateway receiving,
  syncing and journaling it);
* right after a C-STORE response: its file is durable, its journal row waits for the next
  synced commit, and uploads of the open association run;
* during the release: A-RELEASE-RQ sent, A-RELEASE-RP not received (up to 5 ms later);
* after the A-RELEASE-RP, up to 50 ms later: the last uploads, the announcement, the publish
  and its confirm, the rows forgotten and the files removed.

On the embedded backends each cut must also keep every event the killed service had appended
to the event log (read after the kill, before the cut: an append is durable when it returns).
Then, every service running, the same reconciliation as the fault suite
(tests/support/fault_reconciliation.py), and no file left in the spool. A short run (CI) makes
:data:`SHORT_RUN_CUTS` cuts per test; ``GATEWAY_TEST_POWER_CUTS`` sets the number for a
release check (docs/reliability.md). The seed is printed and a failure names it;
``GATEWAY_TEST_SEED`` replays its choices (the moments, the delays, the senders' data; exactly
where a cut lands within its moment is timing).
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pytest

from gateway.dicom_status import Status
from gateway_client.testing import GatewayProcess, TestServices
from tests.support.amqp import ReceivedMessage
from tests.support.fault_reconciliation import Announced, check_each_association, check_the_bucket
from tests.support.fault_senders import Outcome, Stage, Traffic
from tests.support.ingest import EMBEDDED, RABBITMQ_S3, Ingest
from tests.support.local_bus import logged, received
from tests.support.net import wait_until
from tests.support.power_cuts import read_only, schedule
from tests.support.power_loss_fs import PowerLossFs
from tests.support.power_loss_model import Losses
from tests.support.settled import journal_rows


class Moment(StrEnum):
    MID_STORE = "mid-C-STORE"
    STORE_ANSWERED = "right after a C-STORE response"
    MID_RELEASE = "during the release"
    AFTER_RELEASE = "uploads and publishes after the release"


@dataclass(frozen=True)
class Aim:
    """The sender's stage a moment waits for, and how long after it the cut may land."""

    stage: Stage
    latest: float

    def delay(self, rng: random.Random) -> float:
        """Half of the cuts at once (within microseconds: the senders' thread strikes), the
        others up to :attr:`latest` later."""
        return 0.0 if not self.latest or rng.random() < 0.5 else rng.uniform(0, self.latest)


AIMS = {
    # A small instance is received, synced and journaled within a few milliseconds.
    Moment.MID_STORE: Aim(Stage.STORING, 0.005),
    Moment.STORE_ANSWERED: Aim(Stage.STORED, 0.0),
    Moment.MID_RELEASE: Aim(Stage.RELEASING, 0.005),
    # The last uploads, the announcement and the publish follow within tens of milliseconds.
    Moment.AFTER_RELEASE: Aim(Stage.RELEASED, 0.05),
}
#: Cuts per test in the short run: each moment once.
SHORT_RUN_CUTS = len(Moment)
#: How long a cut waits for its moment (the senders bring each within a second).
MOMENT_SECONDS = 20.0
#: Once the last cut is over, how long the gateway may take to hand everything on.
SETTLE_SECONDS = 120.0
#: What ingest announces (association.released.<pipeline>).
RELEASED_EVENTS = ("association.released.#",)


@dataclass(frozen=True)
class Cut:
    """One power cut: its moment, where the senders were, what the file system undid, and
    how many appended events were in the event log before it (embedded) and not after."""

    moment: Moment
    delay: float
    stages: Counter[Stage]
    losses: Losses
    logged: int = 0
    lost: frozenset[tuple[int, str]] = frozenset()

    def __str__(self) -> str:
        busy = ", ".join(f"{n} {stage}" for stage, n in sorted(self.stages.items()))
        kept = f"; {self.logged} events logged, {len(self.lost)} lost" if self.logged else ""
        return (
            f"{self.moment} +{self.delay * 1000:.1f} ms (senders: {busy}; undone: "
            f"{self.losses.names_lost} names, {self.losses.names_back} unlinks, "
            f"{self.losses.files_rolled_back} files' contents{kept})"
        )


def appended(db: sqlite3.Connection) -> frozenset[tuple[int, str]]:
    """(sequence number, event id) of each event in the event log open as ``db``."""
    return frozenset((e.seq, e.message_id) for e in logged(db))


@dataclass
class PowerCuts:
    """Cuts the power under the running gateway at a moment the senders reach, and brings
    it back on what was kept. :meth:`watch` is the senders' watch: a cut due at once is
    struck there, on the senders' thread, as they enter the stage aimed at."""

    gateway: GatewayProcess
    fs: PowerLossFs
    traffic: Traffic
    rng: random.Random
    #: The event log (embedded backends): whatever it held at the kill must survive the cut.
    event_log: Path | None = None
    cuts: list[Cut] = field(default_factory=list)
    _armed: Stage | None = None
    _at_once: bool = False
    _struck: Counter[Stage] | None = None
    _reached: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, stage: Stage) -> None:
        with self._lock:
            if stage is not self._armed:
                return
            self._armed = None
            if self._at_once:
                self._struck = self._strike()
        self._reached.set()

    def cut(self, moment: Moment) -> None:
        aim = AIMS[moment]
        delay = aim.delay(self.rng)
        with ExitStack() as stack:
            # Attached across the kill: what it reads after it is what had been appended.
            log = stack.enter_context(read_only(self.event_log)) if self.event_log else None
            with self._lock:
                self._armed, self._at_once, self._struck = aim.stage, not delay, None
                self._reached.clear()
            if not self._reached.wait(MOMENT_SECONDS):
                raise AssertionError(f"no sender reached {aim.stage} within {MOMENT_SECONDS:g} s")
            if delay:
                time.sleep(delay)
                self._struck = self._strike()
            assert self._struck is not None
            self.gateway.kill_all()  # waits for the main process; the cut for the workers
            before = appended(log) if log else frozenset()
        losses = self.fs.cut()
        self.fs.mount()
        lost: frozenset[tuple[int, str]] = frozenset()
        if self.event_log:
            with read_only(self.event_log) as db:
                lost = before - appended(db)
        # Listening is what the senders need (the relay may still be connecting).
        self.gateway.start(until="listening")
        self.cuts.append(Cut(moment, delay, self._struck, losses, len(before), lost))

    def _strike(self) -> Counter[Stage]:
        """SIGKILL to the gateway and its workers; returns where the senders were."""
        stages = self.traffic.stages()
        assert self.gateway.pid is not None
        os.killpg(self.gateway.pid, signal.SIGKILL)
        return stages

    def pause(self) -> None:
        """Let the senders go on for a random while: traffic between the cuts, not a wait
        for readiness."""
        time.sleep(self.rng.uniform(0.3, 1.2))


def spool_files(spool: Path) -> list[Path]:
    """Instance files left in the spool (not the journal)."""
    return sorted(
        Path(parent) / name
        for directory in ("associations", "incoming")
        for parent, _, names in os.walk(spool / directory)
        for name in names
    )


@contextmanager
def announcements(ingest: Ingest) -> Iterator[Callable[[], list[ReceivedMessage]]]:
    """For the block, what returns every event ingest announced once it has handed all on.
    RabbitMQ's are collected throughout; the event log is read at the end (a reader holding
    it open would hold up each cut's unmount)."""
    if ingest.embedded:

        def read_the_log() -> list[ReceivedMessage]:
            with read_only(ingest.event_log) as db:
                return [received(e) for e in logged(db, RELEASED_EVENTS)]

        yield read_the_log
        return
    with ingest.events(RELEASED_EVENTS) as events:

        def everything() -> list[ReceivedMessage]:
            # The journal is empty, so every event ingest will ever publish has been
            # confirmed: once the collector has caught up with the broker it holds them all.
            events.catch_up(timeout=30)
            messages = events.wait_for(len(events.messages))
            events.assert_no_more()
            return messages

        yield everything


@pytest.mark.backends(RABBITMQ_S3, EMBEDDED)
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_power_cuts_lose_nothing_released_and_hand_on_nothing_aborted(  # noqa: PLR0917
    power_fs: PowerLossFs,
    ingest: Ingest,
    inbox: Path,
    test_services: TestServices,
    workers: int,
    seed: int,
) -> None:
    rng = random.Random(seed)
    # The test's files on the mount: the spool, and the embedded backends' event log and objects.
    ingest = dataclasses.replace(ingest, workdir=power_fs.mountpoint)
    spool = power_fs.mountpoint / "spool"
    gateway = ingest.start(ingest.config(workers=workers))
    moments = schedule(rng, list(Moment), test_services.power_cuts or SHORT_RUN_CUTS)
    started = time.monotonic()
    try:
        with announcements(ingest) as announced_so_far:
            traffic = Traffic(gateway.host, gateway.port, inbox, seed)
            event_log = ingest.event_log if ingest.embedded else None
            power = PowerCuts(gateway, power_fs, traffic, rng, event_log)
            traffic.watch = power.watch
            traffic.start()
            try:
                for moment in moments:
                    power.pause()
                    power.cut(moment)
                power.pause()
            finally:
                traffic.finish()
            cuts_over = time.monotonic()
            try:
                wait_until(lambda: journal_rows(spool) == 0, SETTLE_SECONDS, "all handed on")
            except TimeoutError:
                raise AssertionError(
                    f"seed {seed}: {journal_rows(spool)} journal rows left after "
                    f"{SETTLE_SECONDS:g} s\n{gateway.log_tail()}"
                ) from None
            settled_after = time.monotonic() - cuts_over
            announced = Announced.of(announced_so_far())
        left_in_spool = spool_files(spool)
    finally:
        # Before the mount goes: a process still on it would hold the unmount up.
        gateway.stop(timeout=15)

    sent = {s.calling: s for s in traffic.sent}
    outcomes = Counter(s.outcome for s in sent.values())
    summary = (
        f"seed {seed}, {ingest.backend}, {workers} worker(s), {len(power.cuts)} cuts in "
        f"{cuts_over - started:.1f} s: senders {dict(outcomes)}, statuses "
        f"{dict(traffic.statuses)}, {len(announced.by_id)} event ids, "
        f"{announced.published_twice} published twice, all handed on {settled_after:.1f} s "
        f"after the last cut; cuts:\n" + "\n".join(f"  {cut}" for cut in power.cuts)
    )
    print(summary)
    assert not [cut for cut in power.cuts if cut.lost], f"logged events lost: {summary}"
    check_each_association(sent, announced, summary)
    partial = check_the_bucket(ingest, sent, announced, summary)
    print(f"{len(partial)} partial files of puts cut short left in the file store: {partial}")
    assert left_in_spool == [], summary

    # The cuts happened, and the traffic saw them.
    assert [cut.moment for cut in power.cuts] == moments, summary
    assert set(traffic.statuses) == {Status.SUCCESS}, summary
    assert outcomes[Outcome.RELEASED] >= 10 * len(moments), summary
    assert outcomes[Outcome.BROKEN] + outcomes[Outcome.RELEASE_UNANSWERED] > 0, summary
