"""The association lifecycle of ingest's SCP: admission, release and abort bookkeeping.

The handlers here tie each pynetdicom association to the journal: an admitted association gets
a journal row and a spool directory, its release is recorded before it is answered, and an
aborted one is discarded. Handlers are plain functions with their dependencies bound explicitly
(``evt_handlers`` with an argument list), as pynetdicom intends; they run on the association's
own thread. The C-STORE and C-ECHO handlers are in :mod:`ingest.receive`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pynetdicom import evt
from pynetdicom.association import Association

from contracts.keys import new_association_id
from gateway.errors import JournalError
from gateway.logs import fields
from gateway.metrics import ListenerCounters
from gateway.netdicom.association import (
    discard_partial_data_set,
    is_release_request,
    reject,
)
from gateway.settings import AESettings, GatewaySettings
from ingest.incoming import IncomingFiles
from ingest.journal import AssociationRecord, Journal
from ingest.journal_db import AssociationState
from ingest.policy import Admit, AssociationRequest, Limit, Limits, decide, peer_address
from ingest.reject_reasons import (
    NO_REASON_GIVEN,
    TOO_MANY_ASSOCIATIONS,
    TOO_MANY_FROM_SOURCE,
    Reject,
)
from ingest.spool import Spool

log = logging.getLogger(__name__)


@dataclass
class ActiveAssociation:
    """What ingest knows about an admitted association while it is open."""

    association_id: str
    ae: AESettings
    calling_ae_title: str
    remote_host: str
    remote_port: int
    started_at: datetime
    started_monotonic: float = field(default_factory=time.monotonic)
    instances: int = 0
    bytes: int = 0
    next_seq: int = 0
    #: Its release is recorded and the A-RELEASE-RP going out: it is ours to finish.
    releasing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_seq(self) -> int:
        with self.lock:
            self.next_seq += 1
            return self.next_seq


class AssociationTable:
    """The admitted associations, keyed by pynetdicom's Association object. Thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._active: dict[int, tuple[Association, ActiveAssociation]] = {}

    def alive(self) -> int:
        """Admitted associations whose thread is alive."""
        with self.lock:
            return sum(1 for assoc, _ in self._active.values() if assoc.is_alive())

    def add(self, assoc: Association, active: ActiveAssociation) -> None:
        with self.lock:
            self._active[id(assoc)] = (assoc, active)

    def get(self, assoc: Association) -> ActiveAssociation | None:
        with self.lock:
            entry = self._active.get(id(assoc))
        return None if entry is None else entry[1]

    def pop(self, assoc: Association) -> ActiveAssociation | None:
        with self.lock:
            entry = self._active.pop(id(assoc), None)
        return None if entry is None else entry[1]

    def association_ids(self) -> set[str]:
        with self.lock:
            return {active.association_id for _, active in self._active.values()}

    def reap(self) -> list[ActiveAssociation]:
        """Entries whose thread ended without a release or abort event reaching us."""
        with self.lock:
            dead = [key for key, (assoc, _) in self._active.items() if not assoc.is_alive()]
            return [self._active.pop(key)[1] for key in dead]


class StorageSink(Protocol):
    """Takes associations on to storage: the uploader, or the parent of a worker process."""

    def spooled(self, association_id: str) -> None:
        """An instance of the association is durable in the spool and the journal."""

    def released(self, association_id: str) -> None:
        """The association's release is recorded."""

    def aborted(self, association_id: str) -> None:
        """The aborted association is due for removal, and objects of it may be in storage."""


@dataclass
class IngestContext:
    settings: GatewaySettings
    journal: Journal
    spool: Spool
    uploader: StorageSink
    incoming: IncomingFiles
    metrics: ListenerCounters
    table: AssociationTable = field(default_factory=AssociationTable)


def _reject(
    ctx: IngestContext, assoc: Association, request: AssociationRequest, refusal: Reject
) -> None:
    port = int(assoc.requestor.port)
    log.warning(
        "association rejected: called=%s calling=%s from %s:%d reason=%s",
        request.called_ae_title,
        request.calling_ae_title,
        request.remote_host,
        port,
        refusal.name,
        extra=fields(
            event="association",
            outcome="rejected",
            reason=refusal.name,
            called_ae=request.called_ae_title,
            calling_ae=request.calling_ae_title,
            remote=f"{request.remote_host}:{port}",
        ),
    )
    ctx.metrics.associations_rejected.labels(refusal.name).inc()
    reject(assoc, int(refusal.result), int(refusal.source), refusal.reason)


def handle_requested(event: evt.Event, ctx: IngestContext) -> None:
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    if primitive is None:  # pynetdicom only triggers EVT_REQUESTED after an A-ASSOCIATE-RQ
        return
    request = AssociationRequest(
        called_ae_title=str(primitive.called_ae_title).strip(),
        calling_ae_title=str(primitive.calling_ae_title).strip(),
        remote_host=peer_address(str(assoc.requestor.address)),
    )
    port = int(assoc.requestor.port)
    settle_ended_threads(ctx)
    try:
        decision = decide(
            request,
            ctx.settings.ingest,
            ctx.settings.sources,
            ctx.journal.open_count(),
            ctx.spool.usage(),
        )
        if isinstance(decision, Admit):
            active = ActiveAssociation(
                association_id=new_association_id(),
                ae=decision.ae,
                calling_ae_title=request.calling_ae_title,
                remote_host=request.remote_host,
                remote_port=port,
                started_at=datetime.now(UTC),
            )
            ctx.spool.open_association(active.association_id)
            record = AssociationRecord(
                association_id=active.association_id,
                called_ae_title=request.called_ae_title,
                calling_ae_title=request.calling_ae_title,
                remote_host=request.remote_host,
                remote_port=port,
                pipeline=decision.ae.pipeline,
                started_at=active.started_at,
            )
            # In the table before the journal: see reconcile().
            ctx.table.add(assoc, active)
            # The count above was a first look; this one, in the admitting transaction, is
            # the one that holds when several associations (or worker processes) race.
            settings = ctx.settings.ingest
            reached = ctx.journal.begin_association(
                record,
                Limits(
                    settings.max_associations,
                    settings.max_associations_per_calling_ae,
                    settings.max_associations_per_address,
                ),
            )
            if reached is not None:
                ctx.table.pop(assoc)
                ctx.spool.remove_association(active.association_id)
                decision = TOO_MANY_ASSOCIATIONS if reached is Limit.TOTAL else TOO_MANY_FROM_SOURCE
    except (JournalError, OSError) as exc:
        # pynetdicom swallows handler exceptions and goes on to accept; fail closed instead.
        log.error("cannot admit association from %s: %s", request.remote_host, exc)
        ctx.table.pop(assoc)
        _reject(ctx, assoc, request, NO_REASON_GIVEN)
        return
    if not isinstance(decision, Admit):
        _reject(ctx, assoc, request, decision)
        return
    ctx.metrics.associations_accepted.labels(decision.ae.ae_title).inc()
    # Several called AE titles share one listener: answer as the one that was called.
    assoc.acceptor.ae_title = request.called_ae_title
    log.debug("association %s admitted for %s", active.association_id, decision.ae.pipeline)


def _log_end(ctx: IngestContext, active: ActiveAssociation, outcome: str) -> None:
    """The one line per association, and its count by outcome."""
    duration = time.monotonic() - active.started_monotonic
    log.info(
        "association %s %s: called=%s calling=%s from %s:%d instances=%d bytes=%d "
        "duration=%.3fs pipeline=%s",
        active.association_id,
        outcome,
        active.ae.ae_title,
        active.calling_ae_title,
        active.remote_host,
        active.remote_port,
        active.instances,
        active.bytes,
        duration,
        active.ae.pipeline,
        extra=fields(
            event="association",
            association_id=active.association_id,
            outcome=outcome,
            called_ae=active.ae.ae_title,
            calling_ae=active.calling_ae_title,
            remote=f"{active.remote_host}:{active.remote_port}",
            instances=active.instances,
            bytes=active.bytes,
            duration_seconds=round(duration, 3),
            pipeline=active.ae.pipeline,
        ),
    )
    released = outcome.startswith("released")
    ctx.metrics.associations_ended.labels(
        active.ae.ae_title, "released" if released else "aborted"
    ).inc()


def handle_acse_recv(event: evt.Event, ctx: IngestContext) -> None:
    """Record an A-RELEASE-RQ before pynetdicom answers it.

    pynetdicom sends the A-RELEASE-RP first and fires EVT_RELEASED after; recording the
    release only then would let a crash in between discard an association whose sender was
    told it had been released. This runs on the association thread just before the answer.
    """
    if not is_release_request(event):
        return
    active = ctx.table.get(event.assoc)
    if active is None:
        return
    try:
        recorded = ctx.journal.mark_releasing(active.association_id, datetime.now(UTC))
    except JournalError as exc:
        # Without a durable record the release must not be confirmed.
        log.error(
            "association %s: cannot record the release, aborting: %s", active.association_id, exc
        )
        event.assoc.abort()
        return
    if not recorded:
        # The journal already counts it as aborted, its files perhaps gone: confirming the
        # release would tell the sender that instances which will never be handed on are safe.
        log.warning(
            "association %s: release requested after the journal had ended it, aborting",
            active.association_id,
        )
        event.assoc.abort()
        return
    active.releasing = True


def handle_released(event: evt.Event, ctx: IngestContext) -> None:
    # Out of the table only once the journal says what became of it (see reconcile).
    active = ctx.table.get(event.assoc)
    if active is None:
        return
    try:
        ctx.journal.mark_released(active.association_id, datetime.now(UTC))
    except JournalError as exc:
        # It stays "releasing" in the journal: reconcile() records it later.
        log.error("association %s: cannot record the release: %s", active.association_id, exc)
        ctx.table.pop(event.assoc)
        _log_end(ctx, active, "released-but-not-recorded")
        return
    ctx.table.pop(event.assoc)
    _log_end(ctx, active, "released")
    ctx.uploader.released(active.association_id)


def _finish_aborted(ctx: IngestContext, active: ActiveAssociation, outcome: str) -> None:
    delay = ctx.settings.ingest.aborted_cleanup_seconds
    try:
        in_storage = ctx.journal.mark_aborted(
            active.association_id, datetime.now(UTC) + timedelta(seconds=delay)
        )
        if delay == 0 and in_storage:
            # Uploads of it may be under way: the uploader removes it once they have ended.
            ctx.uploader.aborted(active.association_id)
        elif delay == 0:
            ctx.spool.remove_association(active.association_id)
            ctx.journal.forget(active.association_id)
    except (JournalError, OSError) as exc:
        log.error("association %s: cleanup after abort failed: %s", active.association_id, exc)
    _log_end(ctx, active, outcome)


def settle_ended_threads(ctx: IngestContext) -> None:
    """Finish the admitted associations whose thread ended without a release or an abort
    event reaching us, so that their places are given back.

    pynetdicom ends an association without ``EVT_ABORTED`` when its connection breaks while
    the association is still being admitted (an undecodable PDU right behind the
    A-ASSOCIATE-RQ did it). One whose release was already recorded is left to
    :func:`reconcile`, which records it as released: its A-RELEASE-RP may have left.
    """
    for stale in ctx.table.reap():
        if not stale.releasing:
            _finish_aborted(ctx, stale, "aborted (its thread ended without a release)")


def handle_aborted(event: evt.Event, ctx: IngestContext) -> None:
    discard_partial_data_set(event.assoc)
    active = ctx.table.get(event.assoc)
    if active is not None:
        _finish_aborted(ctx, active, "aborted")
        ctx.table.pop(event.assoc)


def handle_rejected(event: evt.Event, ctx: IngestContext) -> None:
    """pynetdicom itself rejected an association we had admitted (its own flood guard)."""
    active = ctx.table.get(event.assoc)
    if active is not None:
        _finish_aborted(ctx, active, "rejected-by-pynetdicom")
        ctx.table.pop(event.assoc)


def reconcile(ctx: IngestContext) -> None:
    """Settle this process's journal rows that hold a place but whose association is gone.

    A journal write that failed when an association ended (release or abort) leaves its row
    open, and open rows count against ``max_associations``. Rows are read before the table,
    and admission adds to the table before the journal, so a row being admitted right now is
    never taken for one that is gone.
    """
    holding = ctx.journal.ownership.holding(os.getpid())
    present = ctx.table.association_ids()
    cleanup_after = datetime.now(UTC) + timedelta(
        seconds=ctx.settings.ingest.aborted_cleanup_seconds
    )
    for association_id, state in holding:
        if association_id in present:
            continue
        if state is AssociationState.RELEASING:
            log.warning("association %s: its release is recorded now", association_id)
            ctx.journal.mark_released(association_id, datetime.now(UTC))
            ctx.uploader.released(association_id)
        else:
            log.warning("association %s: its abort is recorded now", association_id)
            ctx.journal.mark_aborted(association_id, cleanup_after)
