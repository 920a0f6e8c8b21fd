"""Randomized fault injection on ingest: nothing a sender saw released is lost or altered,
nothing aborted is handed on, nothing is left behind.

Several senders keep sending associations (1 to 4 small instances each, one in six aborted by
the sender) while the test, in an order drawn from a seed, cuts RabbitMQ, S3 or both (TCP
links it stops and restores), kills the ingest service with SIGKILL at four kinds of moment
(an association mid-C-STORE; an open association some of whose instances are in S3 already;
a released association not yet stored in S3; an event stored but not yet published) and
restarts it, and fills the spool's filesystem past its reserve. Then,
with every service back, it reconciles what each sender saw with what reached the broker and
the bucket. The seed is printed and a failure names it; ``GATEWAY_TEST_SEED`` replays it
(:mod:`tests.support.seed`).
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pytest

from gateway.dicom_status import Status
from gateway_client.testing import GatewayProcess
from ingest.journal_db import AssociationState
from ingest.uploader import RETRY_BACKOFF_SECONDS
from tests.support.fault_reconciliation import Announced, check_each_association, check_the_bucket
from tests.support.fault_senders import Outcome, Traffic
from tests.support.ingest import RABBITMQ_S3, Ingest
from tests.support.link import Link
from tests.support.net import wait_until

#: A-ASSOCIATE-RJ rejected-transient / service-provider (presentation) / temporary congestion.
SPOOL_FULL = (2, 3, 1)
#: How long a fault waits for the moment it needs (traffic makes it come within a second, once
#: the uploader works again: after an outage it waits out its backoff first, up to its longest).
MOMENT_SECONDS = max(RETRY_BACKOFF_SECONDS) + 20.0
#: How far below the reserve the filler takes the free space: well past what the test's own
#: traffic and the other tests give back meanwhile.
FILL_BEYOND_RESERVE = 256 << 20
#: Kills aimed at one kind of moment at most: the moment seen in the journal can pass in the
#: instant before the signal lands (an association of small instances ends in milliseconds),
#: and a kill that missed it is tried again, so that each kind is really exercised.
KILL_ATTEMPTS = 5
#: Once every fault is over, how long the gateway may take to hand everything on.
SETTLE_SECONDS = 120.0


class Fault(StrEnum):
    CUT_BROKER = "cut-broker"
    CUT_STORAGE = "cut-storage"
    CUT_BOTH = "cut-both"
    KILL_MID_STORE = "kill-mid-store"
    KILL_MID_UPLOAD = "kill-mid-upload"
    KILL_BEFORE_UPLOAD = "kill-before-upload"
    KILL_BEFORE_PUBLISH = "kill-before-publish"
    SPOOL_FULL = "spool-full"


#: Each fault this many times, in an order drawn from the seed.
ROUNDS_EACH = 2


@dataclass(frozen=True)
class JournalSnapshot:
    """What the journal held when the service was killed."""

    mid_store: int  # open associations with instances
    mid_upload: int  # open associations with instances in S3 already
    before_upload: int  # released associations with instances not yet in S3
    before_publish: int  # events not yet published

    def shows(self, fault: Fault) -> bool:
        return {
            Fault.KILL_MID_STORE: self.mid_store,
            Fault.KILL_MID_UPLOAD: self.mid_upload,
            Fault.KILL_BEFORE_UPLOAD: self.before_upload,
            Fault.KILL_BEFORE_PUBLISH: self.before_publish,
        }[fault] > 0


def journal_snapshot(journal: Path) -> JournalSnapshot:
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5) as db:

        def count(sql: str, *args: str) -> int:
            return int(db.execute(sql, args).fetchone()[0])

        per_association = (
            "SELECT COUNT(DISTINCT a.association_id) FROM associations a"
            " JOIN instances i ON i.association_id = a.association_id WHERE "
        )
        return JournalSnapshot(
            mid_store=count(per_association + "a.state = ?", AssociationState.OPEN),
            mid_upload=count(
                per_association + "a.state = ? AND i.sha256 IS NOT NULL", AssociationState.OPEN
            ),
            before_upload=count(
                per_association + "a.state IN (?, ?) AND i.sha256 IS NULL",
                AssociationState.RELEASING,
                AssociationState.RELEASED,
            ),
            before_publish=count("SELECT COUNT(*) FROM outbox"),
        )


def journal_rows(journal: Path) -> int:
    """Rows left in the journal: none once everything is handed on or cleaned up."""
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5) as db:
        return sum(
            int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
            for table in ("associations", "instances", "outbox")
        )


@dataclass
class Faults:
    """Inflicts each fault on the running gateway and records what the kills caught."""

    gateway: GatewayProcess
    broker: Link
    storage: Link
    journal: Path
    filler: Path
    traffic: Traffic
    rng: random.Random
    kills: list[tuple[Fault, JournalSnapshot]] = field(default_factory=list)
    #: Kills that landed after the moment they aimed at had passed (each was tried again).
    missed: int = 0

    def inflict(self, fault: Fault) -> None:
        match fault:
            case Fault.CUT_BROKER:
                self._outage(self.broker)
            case Fault.CUT_STORAGE:
                self._outage(self.storage)
            case Fault.CUT_BOTH:
                self._outage(self.broker, self.storage)
            case Fault.KILL_MID_STORE:
                self._kill(fault, lambda s: s.mid_store > 0)
            case Fault.KILL_MID_UPLOAD:
                # Uploads run while the association is open: its objects must go with it.
                self._kill(fault, lambda s: s.mid_upload > 0)
            case Fault.KILL_BEFORE_UPLOAD:
                # With S3 cut, released associations wait for their upload.
                self.storage.cut()
                self._kill(fault, lambda s: s.before_upload > 0)
                self.pause()
                self.storage.restore()
            case Fault.KILL_BEFORE_PUBLISH:
                # With RabbitMQ cut, stored associations' events wait in the outbox.
                self.broker.cut()
                self._kill(fault, lambda s: s.before_publish > 0)
                self.pause()
                self.broker.restore()
            case Fault.SPOOL_FULL:
                self._fill_spool()

    def pause(self) -> None:
        """Let the senders go on for a random while: traffic between and during the faults,
        not a wait for readiness."""
        time.sleep(self.rng.uniform(0.3, 1.2))

    def _outage(self, *links: Link) -> None:
        for link in links:
            link.cut()
        self.pause()
        for link in links:
            link.restore()

    def _kill(self, fault: Fault, moment: Callable[[JournalSnapshot], bool]) -> None:
        for _ in range(KILL_ATTEMPTS):
            wait_until(
                lambda: moment(journal_snapshot(self.journal)),
                MOMENT_SECONDS,
                f"a moment to {fault}",
            )
            self.gateway.kill_all()
            # The journal as the crash left it: what the restart has to recover.
            snapshot = journal_snapshot(self.journal)
            # Listening is what the senders need; it is not ready while RabbitMQ or S3 is cut.
            self.gateway.start(until="listening")
            if snapshot.shows(fault):
                break
            self.missed += 1
        self.kills.append((fault, snapshot))

    def _fill_spool(self) -> None:
        rejected_before = self.traffic.count(Outcome.REJECTED, str(SPOOL_FULL))
        # Sized now, from what is free now: whatever else wrote to the disk since the start,
        # this takes the free space below the reserve.
        room = shutil.disk_usage(self.filler.parent).free - reserve_bytes(self.gateway)
        with self.filler.open("wb") as filler:
            os.posix_fallocate(filler.fileno(), 0, max(room, 0) + FILL_BEYOND_RESERVE)
        try:
            wait_until(
                lambda: self.traffic.count(Outcome.REJECTED, str(SPOOL_FULL)) > rejected_before,
                MOMENT_SECONDS,
                "an association turned away while the spool is full",
            )
        finally:
            self.filler.unlink()


def _reserve_margin(directory: Path) -> int:
    """Bytes between the free space at the test's start and the reserve it configures: how
    far the free space may fall before the spool counts as full. The test's own traffic takes
    a few MB of it; tests running alongside (in other processes) write gigabytes."""
    return min(shutil.disk_usage(directory).free // 4, 8 << 30)


def reserve_bytes(gateway: GatewayProcess) -> int:
    """The spool reserve ``gateway`` was started with, in bytes."""
    assert gateway.config is not None
    return int(float(gateway.config["ingest"]["reserved_storage_gb"]) * 2**30)


@pytest.fixture
def links(ingest: Ingest) -> Iterator[tuple[Link, Link]]:
    broker_host, _, broker_port = ingest.amqp_url.split("@")[-1].rstrip("/").partition(":")
    storage_host, storage_port = ingest.s3.endpoint.rsplit(":", 1)
    with (
        Link(broker_host, int(broker_port.partition("/")[0] or 5672)) as broker,
        Link(storage_host, int(storage_port)) as storage,
    ):
        yield broker, storage


def start_through(ingest: Ingest, links: tuple[Link, Link], workers: int) -> GatewayProcess:
    """A gateway that reaches RabbitMQ and S3 through the links, with the reserve set so that
    the spool counts as full once its filesystem's free space drops by the margin."""
    broker, storage = links
    reserve = shutil.disk_usage(ingest.workdir).free - _reserve_margin(ingest.workdir)
    config = ingest.config(
        workers=workers, reserved_storage_gb=reserve / 2**30, storage_watermark_percent=100
    )
    credentials, _, rest = ingest.amqp_url.partition("@")
    config["broker"]["url"] = f"{credentials}@{broker.endpoint}/{rest.partition('/')[2]}"
    config["storage"]["endpoint"] = storage.endpoint
    return ingest.start(config)


@pytest.mark.backends(RABBITMQ_S3)
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_random_faults_lose_nothing_released_and_hand_on_nothing_aborted(
    ingest: Ingest, inbox: Path, links: tuple[Link, Link], workers: int, seed: int
) -> None:
    rng = random.Random(seed)
    gateway = start_through(ingest, links, workers)
    journal = ingest.workdir / "spool" / "journal.sqlite3"
    schedule = [fault for fault in Fault for _ in range(ROUNDS_EACH)]
    rng.shuffle(schedule)

    with ingest.events() as events:
        traffic = Traffic(gateway.host, gateway.port, inbox, seed)
        faults = Faults(gateway, *links, journal, ingest.workdir / "filler", traffic, rng)
        traffic.start()
        try:
            for fault in schedule:
                faults.pause()
                faults.inflict(fault)
            faults.pause()
        finally:
            traffic.finish()
        faults_over = time.monotonic()
        try:
            wait_until(lambda: journal_rows(journal) == 0, SETTLE_SECONDS, "all handed on")
        except TimeoutError:
            raise AssertionError(
                f"seed {seed}: the journal still holds {journal_snapshot(journal)} "
                f"after {SETTLE_SECONDS:g} s\n{gateway.log_tail()}"
            ) from None
        settled_after = time.monotonic() - faults_over
        # The journal is empty, so every event ingest will ever publish has been confirmed:
        # once the collector has caught up with the broker it holds them all.
        events.catch_up(timeout=30)
        announced = Announced.of(events.wait_for(len(events.messages)))
        events.assert_no_more()

    sent = {s.calling: s for s in traffic.sent}
    outcomes = Counter(s.outcome for s in sent.values())
    summary = (
        f"seed {seed}: senders {dict(outcomes)}, statuses {dict(traffic.statuses)}, "
        f"{len(announced.by_id)} event ids, {announced.published_twice} published twice, "
        f"all handed on {settled_after:.1f} s after the last fault, "
        f"kills {[(f.value, s) for f, s in faults.kills]}, "
        f"{faults.missed} more that missed their moment"
    )
    print(summary)
    check_each_association(sent, announced, summary)
    check_the_bucket(ingest, sent, announced, summary)
    assert ingest.spool_files() == [], summary

    # The faults happened where they were meant to, and the traffic saw them.
    assert set(traffic.statuses) == {Status.SUCCESS}, summary
    for fault, snapshot in faults.kills:
        assert snapshot.shows(fault), f"{fault} killed at {snapshot}: {summary}"
    assert outcomes[Outcome.RELEASED] >= 50, summary
    assert outcomes[Outcome.ABORTED] > 0, summary
    assert outcomes[Outcome.BROKEN] > 0, summary
    assert traffic.count(Outcome.REJECTED, str(SPOOL_FULL)) >= ROUNDS_EACH, summary
