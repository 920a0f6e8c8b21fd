"""The DICOM SCP: pynetdicom set-up and the handlers that tie an association to the journal.

Handlers are plain functions with their dependencies bound explicitly (``evt_handlers`` with an
argument list), as pynetdicom intends. They run on the association's own thread.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, cast

from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom import dimse_messages as pynetdicom_dimse_messages
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.transport import ThreadedAssociationServer

from contracts.keys import is_valid_uid, new_association_id, object_key
from gateway.dicom_status import VERIFICATION_SOP_CLASS, Status
from gateway.errors import InstanceRejected, JournalError
from gateway.logs import fields
from gateway.metrics import ListenerCounters
from gateway.netdicom.dicom_socket import handle_conn_open
from gateway.netdicom.prompt_dul import start_acceptor
from gateway.settings import AESettings, GatewaySettings
from gateway.tls import server_context
from ingest.incoming import IncomingFiles
from ingest.journal import (
    AssociationNotOpen,
    AssociationRecord,
    Journal,
    SpooledInstance,
)
from ingest.journal_db import AssociationState
from ingest.part10 import data_set_offset, read_identity
from ingest.policy import Admit, AssociationRequest, decide
from ingest.reject_reasons import NO_REASON_GIVEN, TOO_MANY_ASSOCIATIONS, Reject
from ingest.spool import Spool
from ingest.well_formed import check_well_formed

log = logging.getLogger(__name__)

#: How long an EVT_REQUESTED handler waits for the A-ASSOCIATE-RJ to leave before giving up.
REJECT_SEND_SECONDS = 5.0
#: pynetdicom counts TCP connections that never send an A-ASSOCIATE-RQ (port probes) against
#: its own limit until the ACSE timeout; our limit counts real associations, so pynetdicom's
#: is set higher by this headroom and only guards against floods of probes.
PROBE_HEADROOM = 1000
_AWAITING_ANSWER = frozenset({"Sta2", "Sta3"})


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


class ReleasedSink(Protocol):
    """Takes released associations on to storage: the uploader, or the parent of a worker."""

    def submit(self, association_id: str) -> None: ...


@dataclass
class IngestContext:
    settings: GatewaySettings
    journal: Journal
    spool: Spool
    uploader: ReleasedSink
    incoming: IncomingFiles
    metrics: ListenerCounters
    table: AssociationTable = field(default_factory=AssociationTable)


def _send_reject(assoc: Association, reject: Reject) -> None:
    """Send the A-ASSOCIATE-RJ and wait until the state machine has put it on the wire.

    pynetdicom closes the socket as soon as the handler returns, so returning early would
    drop the rejection and the sender would see a bare TCP close instead of the reason.
    """
    assoc.acse.send_reject(int(reject.result), int(reject.source), reject.reason)
    deadline = time.monotonic() + REJECT_SEND_SECONDS
    # Sta2/Sta3: the request is waiting for our answer; any other state means it has left.
    while time.monotonic() < deadline and assoc.dul.state_machine.current_state in _AWAITING_ANSWER:
        time.sleep(0.005)
    assoc.kill()


def _reject(
    ctx: IngestContext, assoc: Association, request: AssociationRequest, reject: Reject
) -> None:
    port = int(assoc.requestor.port)
    log.warning(
        "association rejected: called=%s calling=%s from %s:%d reason=%s",
        request.called_ae_title,
        request.calling_ae_title,
        request.remote_host,
        port,
        reject.name,
        extra=fields(
            event="association",
            outcome="rejected",
            reason=reject.name,
            called_ae=request.called_ae_title,
            calling_ae=request.calling_ae_title,
            remote=f"{request.remote_host}:{port}",
        ),
    )
    ctx.metrics.associations_rejected.labels(reject.name).inc()
    _send_reject(assoc, reject)


def handle_requested(event: evt.Event, ctx: IngestContext) -> None:
    assoc = event.assoc
    primitive = assoc.requestor.primitive
    if primitive is None:  # pynetdicom only triggers EVT_REQUESTED after an A-ASSOCIATE-RQ
        return
    request = AssociationRequest(
        called_ae_title=str(primitive.called_ae_title).strip(),
        calling_ae_title=str(primitive.calling_ae_title).strip(),
        remote_host=str(assoc.requestor.address),
    )
    port = int(assoc.requestor.port)
    for stale in ctx.table.reap():
        _finish_aborted(ctx, stale, "association thread ended without release")
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
            if not ctx.journal.begin_association(
                record, limit=ctx.settings.ingest.max_associations
            ):
                ctx.table.pop(assoc)
                ctx.spool.remove_association(active.association_id)
                decision = TOO_MANY_ASSOCIATIONS
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


def _check_transfer_syntax(transfer_syntax: str) -> None:
    # pynetdicom accepts whatever string was proposed; an invalid one cannot be announced.
    if not is_valid_uid(transfer_syntax):
        raise InstanceRejected(
            Status.CANNOT_UNDERSTAND,
            f"transfer syntax {transfer_syntax[:80]!r} is not a valid UID",
        )


def handle_store(event: evt.Event, ctx: IngestContext) -> int:
    active = ctx.table.get(event.assoc)
    received = Path(event.dataset_path)
    if active is None:
        log.error("C-STORE on an association ingest does not know; refusing")
        received.unlink(missing_ok=True)
        return Status.OUT_OF_RESOURCES
    transfer_syntax = str(event.context.transfer_syntax)
    request = cast(C_STORE, event.request)
    adopted: Path | None = None
    try:
        write_error = ctx.incoming.take_failure(received)
        if write_error is not None:
            raise write_error
        _check_transfer_syntax(transfer_syntax)
        with received.open("rb") as data:
            offset = data_set_offset(data)
            # Before the identity: a data set cut short or with lying lengths must not be
            # answered with success, and pydicom then only reads what is well-formed.
            check_well_formed(data, offset, transfer_syntax)
            identity = read_identity(
                data,
                offset,
                transfer_syntax,
                str(request.AffectedSOPClassUID or ""),
                str(request.AffectedSOPInstanceUID or ""),
            )
        data_length = received.stat().st_size - offset
        key = object_key(
            active.association_id,
            identity.study_instance_uid,
            identity.series_instance_uid,
            identity.sop_instance_uid,
        )
        seq = active.take_seq()
        name = ctx.spool.adopt(received, active.association_id, seq)
        adopted = ctx.spool.instance_path(active.association_id, name)
        replaced = ctx.journal.add_instance(
            SpooledInstance(
                association_id=active.association_id,
                sop_instance_uid=identity.sop_instance_uid,
                sop_class_uid=identity.sop_class_uid,
                transfer_syntax_uid=transfer_syntax,
                study_instance_uid=identity.study_instance_uid,
                series_instance_uid=identity.series_instance_uid,
                spool_name=name,
                data_offset=offset,
                data_length=data_length,
                received_seq=seq,
                object_key=key,
            )
        )
    except InstanceRejected as exc:
        log.warning(
            "association %s: C-STORE refused with 0x%04X: %s",
            active.association_id,
            exc.status,
            exc.reason,
        )
        ctx.metrics.instances_refused.labels(f"{exc.status:04X}").inc()
        return exc.status
    except (JournalError, OSError) as exc:
        if adopted is not None:
            adopted.unlink(missing_ok=True)
        level = logging.INFO if isinstance(exc, AssociationNotOpen) else logging.ERROR
        log.log(
            level,
            "association %s: C-STORE refused with 0x%04X: cannot spool: %s",
            active.association_id,
            Status.OUT_OF_RESOURCES,
            exc,
        )
        ctx.metrics.instances_refused.labels(f"{Status.OUT_OF_RESOURCES:04X}").inc()
        return Status.OUT_OF_RESOURCES
    if replaced is not None:
        ctx.spool.instance_path(active.association_id, replaced).unlink(missing_ok=True)
    with active.lock:
        active.instances += 1
        active.bytes += data_length
    ctx.metrics.instances_received.labels(active.ae.ae_title).inc()
    ctx.metrics.received_bytes.labels(active.ae.ae_title).inc(data_length)
    return Status.SUCCESS


def handle_echo(_event: evt.Event) -> int:
    return Status.SUCCESS


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
    primitive = getattr(event, "primitive", None)  # set by pynetdicom for this event only
    if not isinstance(primitive, A_RELEASE) or primitive.result is not None:
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
    ctx.uploader.submit(active.association_id)


def _finish_aborted(ctx: IngestContext, active: ActiveAssociation, outcome: str) -> None:
    delay = ctx.settings.ingest.aborted_cleanup_seconds
    try:
        ctx.journal.mark_aborted(
            active.association_id, datetime.now(UTC) + timedelta(seconds=delay)
        )
        if delay == 0:
            ctx.spool.remove_association(active.association_id)
            ctx.journal.forget(active.association_id)
    except (JournalError, OSError) as exc:
        log.error("association %s: cleanup after abort failed: %s", active.association_id, exc)
    _log_end(ctx, active, outcome)


def _discard_partial_data_set(assoc: Association) -> None:
    """Remove the data set pynetdicom was still receiving when the association broke.

    pynetdicom leaves that file behind; the maintenance sweep would find it later, but a
    partial multi-gigabyte transfer should not hold the spool that long.
    """
    message = getattr(assoc.dimse, "message", None)
    partial = getattr(message, "_data_set_path", None)
    if isinstance(partial, Path):
        partial.unlink(missing_ok=True)


def handle_aborted(event: evt.Event, ctx: IngestContext) -> None:
    _discard_partial_data_set(event.assoc)
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


def configure_pynetdicom(incoming: IncomingFiles) -> None:
    """Process-wide pynetdicom switches the SCP depends on.

    - Stream each data set to a file instead of memory, keeping the bytes as received.
    - Accept every storage SOP class, private and unknown ones too, in the sender's first
      proposed transfer syntax, so nothing is ever converted.
    - Create those files with :class:`IncomingFiles` (pynetdicom offers no hook for this, so
      its module-level factory is replaced): on the spool's filesystem, and a full disk fails
      one C-STORE instead of killing the association.
    """
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    pynetdicom_config.UNRESTRICTED_STORAGE_SERVICE = True
    pynetdicom_dimse_messages.NamedTemporaryFile = incoming  # type: ignore[attr-defined, assignment]


def build_ae(settings: GatewaySettings) -> AE:
    ingest = settings.ingest
    ae = AE(ae_title=ingest.ae[0].ae_title)
    ae.implementation_class_uid = ingest.implementation_class_uid
    ae.implementation_version_name = ingest.implementation_version_name
    ae.maximum_pdu_size = ingest.max_pdu_length
    ae.maximum_associations = ingest.max_associations + PROBE_HEADROOM
    ae.network_timeout = ingest.network_timeout_seconds
    ae.require_called_aet = False  # checked by our policy, for several titles
    ae.require_calling_aet = []
    # Synchronous operations only: no asynchronous operations window is negotiated.
    ae.add_supported_context(VERIFICATION_SOP_CLASS)
    return ae


def scp_handlers(ctx: IngestContext) -> list[Any]:
    """The event handlers that tie pynetdicom's associations to ingest."""
    return [
        (evt.EVT_CONN_OPEN, handle_conn_open),
        (evt.EVT_REQUESTED, handle_requested, [ctx]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [ctx]),
        (evt.EVT_ACSE_RECV, handle_acse_recv, [ctx]),
        (evt.EVT_RELEASED, handle_released, [ctx]),
        (evt.EVT_ABORTED, handle_aborted, [ctx]),
        (evt.EVT_REJECTED, handle_rejected, [ctx]),
    ]


def listen_address(settings: GatewaySettings) -> tuple[str, int]:
    return settings.ingest.host, settings.ingest.port


def listener_tls(settings: GatewaySettings) -> ssl.SSLContext | None:
    """The listener's TLS context, if TLS is configured; raises ConfigError."""
    tls = settings.ingest.tls
    return None if tls is None else server_context(tls)


def start_scp(ctx: IngestContext) -> ThreadedAssociationServer:
    """Listen; each association runs on its own thread until the server is shut down."""
    return start_acceptor(
        build_ae(ctx.settings),
        listen_address(ctx.settings),
        scp_handlers(ctx),
        listener_tls(ctx.settings),
    )


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
            ctx.uploader.submit(association_id)
        else:
            log.warning("association %s: its abort is recorded now", association_id)
            ctx.journal.mark_aborted(association_id, cleanup_after)


def stop_scp(server: ThreadedAssociationServer, ctx: IngestContext, grace_seconds: float) -> None:
    """Stop accepting, give admitted associations the grace period, then abort what is left.

    Connections that never became an association (port probes, garbage) are not waited for:
    pynetdicom keeps their threads until its ACSE timeout although nothing can come of them.
    """
    server.shutdown()
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and ctx.table.alive() > 0:
        time.sleep(0.05)
    for assoc in server.active_associations:
        active = ctx.table.get(assoc)
        if active is not None and active.releasing:
            # The sender may have its A-RELEASE-RP already; the release ends it at once.
            continue
        if active is not None:
            log.warning("association still open at the end of the grace period: aborting it")
        assoc.abort()
    for stale in ctx.table.reap():
        log.warning("association %s ended without a release", stale.association_id)
