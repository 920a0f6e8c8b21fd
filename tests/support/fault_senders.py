"""Senders that keep associating while the fault tests break things, and what each saw.

:class:`Traffic` runs :data:`SENDERS` senders on an event loop thread of their own; each sends
associations of 1 to 4 small CT instances (a share of them aborted by the sender), drawn from
the test's seed, and records how each association ended (:class:`Outcome`) and every C-STORE
status it got. The test then reconciles that with what reached the broker and the bucket.
Each sender's :class:`Stage` is kept as it goes, and a ``watch`` is told every step, so that
a test can strike at a chosen moment and record where each sender was when it did.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pydicom.uid import ImplicitVRLittleEndian

from gateway.dicom_status import Status
from tests.support.factories import ct_series, data_set_bytes
from tests.support.raw_scu import Aborted, DataSet, RawAssociation, Rejected

SENDERS = 4
#: A share of the associations that the sender aborts after its last C-STORE.
SENDER_ABORTS = 1 / 6
#: Every step of a sender's association (associate, each C-STORE, release) is answered within
#: this, or the sender gives up on the association.
STEP_SECONDS = 20.0
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class Outcome(StrEnum):
    """What a sender saw of one association."""

    RELEASED = "released"  # A-RELEASE-RP received: must be handed on, once
    RELEASE_UNANSWERED = "release-unanswered"  # A-RELEASE-RQ sent, then the connection ended
    ABORTED = "aborted"  # the sender aborted
    BROKEN = "broken"  # the connection ended before the release was asked for
    REJECTED = "rejected"  # A-ASSOCIATE-RJ
    NOT_CONNECTED = "not-connected"  # the port refused or dropped the connection


class Stage(StrEnum):
    """Where a sender is in its association, as it sees it."""

    ASSOCIATING = "associating"  # connecting, or waiting for the A-ASSOCIATE-AC
    STORING = "storing"  # a C-STORE sent, its response not in yet
    STORED = "stored"  # a C-STORE just answered
    RELEASING = "releasing"  # A-RELEASE-RQ sent, no A-RELEASE-RP yet
    RELEASED = "released"  # A-RELEASE-RP just received
    ENDED = "ended"  # aborted, broken or turned away; or between associations


@dataclass
class Sent:
    calling: str
    data_sets: list[DataSet]
    outcome: Outcome = Outcome.BROKEN
    detail: str = ""


@dataclass
class Traffic:
    """The senders, on an event loop thread of their own, and what each of them saw."""

    host: str
    port: int
    inbox: Path
    seed: int
    #: Told each stage a sender enters, on the senders' event loop thread (so it must be
    #: quick): a test waiting for a moment sets an event there.
    watch: Callable[[Stage], None] | None = None
    sent: list[Sent] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    _stages: dict[int, Stage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="senders")

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(timeout=3 * STEP_SECONDS)
        assert not self._thread.is_alive(), "a sender did not finish its association"

    def count(self, outcome: Outcome, detail: str = "") -> int:
        with self._lock:
            return sum(s.outcome == outcome and detail in s.detail for s in self.sent)

    def stages(self) -> Counter[Stage]:
        """How many senders are at each stage now."""
        with self._lock:
            return Counter(self._stages.values())

    def _enter(self, index: int, stage: Stage) -> None:
        with self._lock:
            self._stages[index] = stage
        if self.watch is not None:
            self.watch(stage)

    async def _main(self) -> None:
        await asyncio.gather(*(self._sender(index) for index in range(SENDERS)))

    async def _sender(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-{index}")
        number = 0
        while not self.stop.is_set():
            number += 1
            sent = Sent(f"FAULT{index}-{number}", self._data_sets(index, number, rng))
            await self._associate(index, sent, abort=rng.random() < SENDER_ABORTS)
            with self._lock:
                self.sent.append(sent)
            self._enter(index, Stage.ENDED)
            if sent.outcome in (Outcome.REJECTED, Outcome.NOT_CONNECTED):
                await asyncio.sleep(0.1)  # a modality's retry pause, not a readiness wait

    def _data_sets(self, index: int, number: int, rng: random.Random) -> list[DataSet]:
        directory = self.inbox / f"{index}-{number}"
        directory.mkdir()
        series = ct_series(
            directory,
            rng.randint(1, 4),
            rows=8,
            cols=8,
            transfer_syntax=ImplicitVRLittleEndian,
            seed=self.seed * 1_000_000 + index * 100_000 + number,
        )
        return [
            DataSet(s.uids.sop_class, s.uids.sop_instance, data_set_bytes(s.path)) for s in series
        ]

    async def _associate(self, index: int, sent: Sent, *, abort: bool) -> None:
        self._enter(index, Stage.ASSOCIATING)
        try:
            association = await asyncio.wait_for(
                RawAssociation.open(
                    self.host, self.port, "GATEWAY", sent.calling, [CT_IMAGE_STORAGE]
                ),
                STEP_SECONDS,
            )
        except Rejected as exc:
            sent.outcome, sent.detail = Outcome.REJECTED, str(exc.rejection)
            return
        except (Aborted, OSError, TimeoutError) as exc:
            sent.outcome, sent.detail = Outcome.NOT_CONNECTED, repr(exc)
            return
        release_asked = False
        try:
            for data_set in sent.data_sets:
                self._enter(index, Stage.STORING)
                status = await asyncio.wait_for(association.store(data_set), STEP_SECONDS)
                with self._lock:
                    self.statuses[status] += 1
                self._enter(index, Stage.STORED)
                if status != Status.SUCCESS:
                    abort = True
                    break
            if abort:
                await association.abort()
                sent.outcome = Outcome.ABORTED
                return
            release_asked = True
            self._enter(index, Stage.RELEASING)
            await asyncio.wait_for(association.release(), STEP_SECONDS)
            sent.outcome = Outcome.RELEASED
            self._enter(index, Stage.RELEASED)
        except (Aborted, OSError, TimeoutError) as exc:
            await association.close()
            sent.outcome = Outcome.RELEASE_UNANSWERED if release_asked else Outcome.BROKEN
            sent.detail = repr(exc)
