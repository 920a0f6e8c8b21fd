"""Receiving instances: ingest's C-STORE and C-ECHO handlers.

A data set arrives in a file of the spool's ``incoming/`` directory (ingest/incoming.py) by one
of two ways: on the C-STORE fast path, written as it arrives by :class:`DirectReceiver` on
the association's DUL thread (gateway/netdicom/direct_store.py), or by pynetdicom, which then
calls :func:`handle_store`. Either way :func:`store_received` checks it, adopts it into the
association's directory, fsynced, and records it in the journal before the C-STORE is
answered. While it arrives, its association's receive limits apply (ingest/receive_guard.py).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import BinaryIO, cast

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from contracts.events import MAX_REASON_LENGTH
from contracts.keys import is_valid_uid, object_key
from gateway.dicom_status import Status
from gateway.errors import InstanceRejected, JournalError, LimitCrossed
from gateway.netdicom.association import abort_as_silent, enable_direct_store, receiving_thread
from gateway.netdicom.direct_store import IncomingInstance
from gateway.netdicom.store_messages import StoreRequest
from ingest.associations import ActiveAssociation, IngestContext
from ingest.journal import AssociationNotOpen, SpooledInstance
from ingest.part10 import (
    InstanceIdentity,
    data_set_offset,
    file_meta_bytes,
    invalid_uid,
    read_identity,
    read_identity_as_received,
)
from ingest.receive_guard import AssociationGuard
from ingest.receive_limits import ReceiveLimits
from ingest.well_formed import walk

log = logging.getLogger(__name__)


def _check_transfer_syntax(transfer_syntax: str) -> None:
    # pynetdicom accepts whatever string was proposed; an invalid one cannot be announced.
    if not is_valid_uid(transfer_syntax):
        raise InstanceRejected(
            Status.CANNOT_UNDERSTAND, invalid_uid("transfer syntax", transfer_syntax)
        )


def _identify(  # noqa: PLR0917 (what store_received has, passed on)
    malformed_instances: str,
    data: BinaryIO,
    offset: int,
    transfer_syntax: str,
    command_sop_class: str,
    command_sop_instance: str,
) -> tuple[InstanceIdentity, str | None]:
    """The received instance's identity, and why it is not well-formed when it is stored all
    the same (``ingest.malformed_instances``; None: it is well-formed)."""
    walked = walk(data, offset, transfer_syntax)
    malformation = walked.malformation
    if malformed_instances == "refuse":
        # Before the identity: a data set cut short or with lying lengths must not be answered
        # with success, and pydicom then only reads what is well-formed.
        walked.check()
        identity = read_identity(
            data, offset, transfer_syntax, command_sop_class, command_sop_instance, walked.known
        )
        return identity, None
    # Stored as received whatever it holds: only the elements the walk found whole are read,
    # and the command's UIDs name the instance.
    identity, problems = read_identity_as_received(
        data,
        offset,
        transfer_syntax,
        command_sop_class,
        command_sop_instance,
        None if malformation is None else malformation.whole_length,
        walked.known,
    )
    if malformation is not None:
        problems.insert(0, malformation.reason)
    reason = "; ".join(problems)
    if len(reason) > MAX_REASON_LENGTH:
        reason = reason[: MAX_REASON_LENGTH - 3] + "..."
    return identity, reason or None


def handle_store(event: evt.Event, ctx: IngestContext) -> int:
    """pynetdicom's C-STORE handler: the data set is in ``event.dataset_path``."""
    active = ctx.table.get(event.assoc)
    received = Path(event.dataset_path)
    if active is None:
        log.error("C-STORE on an association ingest does not know; refusing")
        received.unlink(missing_ok=True)
        return Status.OUT_OF_RESOURCES
    request = cast(C_STORE, event.request)
    return store_received(
        ctx,
        active,
        received,
        str(event.context.transfer_syntax),
        command_sop_class=str(request.AffectedSOPClassUID or ""),
        command_sop_instance=str(request.AffectedSOPInstanceUID or ""),
    )


def store_received(
    ctx: IngestContext,
    active: ActiveAssociation,
    received: Path,
    transfer_syntax: str,
    *,
    command_sop_class: str,
    command_sop_instance: str,
    file_sha256: str | None = None,
) -> int:
    """Check the received file, spool and journal it; the C-STORE status to answer.

    ``file_sha256``: the SHA-256 of the whole received file, when it begins with our file meta
    built from the command's UIDs. The file is then the object byte for byte: ``read_identity``
    refuses a data set whose UIDs are not the command's.
    """
    adopted: Path | None = None
    try:
        write_error = ctx.incoming.take_failure(received)
        if write_error is not None:
            raise write_error
        _check_transfer_syntax(transfer_syntax)
        with received.open("rb") as data:
            offset = data_set_offset(data)
            identity, malformed_reason = _identify(
                ctx.settings.ingest.malformed_instances,
                data,
                offset,
                transfer_syntax,
                command_sop_class,
                command_sop_instance,
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
                # '': none valid in the data set (stored as received; see _identify)
                study_instance_uid=identity.study_instance_uid or "",
                series_instance_uid=identity.series_instance_uid or "",
                spool_name=name,
                data_offset=offset,
                data_length=data_length,
                received_seq=seq,
                object_key=key,
                spool_sha256=file_sha256,
                malformed_reason=malformed_reason,
            )
        )
    except InstanceRejected as exc:
        received.unlink(missing_ok=True)
        # A receive limit was logged when it was crossed; this is only its answer.
        log.log(
            logging.INFO if isinstance(exc, LimitCrossed) else logging.WARNING,
            "association %s: C-STORE refused with 0x%04X: %s",
            active.association_id,
            exc.status,
            exc.reason,
        )
        ctx.metrics.instances_refused.labels(f"{exc.status:04X}").inc()
        return exc.status
    except (JournalError, OSError) as exc:
        received.unlink(missing_ok=True)
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
    if malformed_reason is not None:
        log.warning(
            "association %s: SOP instance %s stored as received, not well-formed: %s",
            active.association_id,
            identity.sop_instance_uid,
            malformed_reason,
        )
    with active.lock:
        active.instances += 1
        active.bytes += data_length
    ctx.metrics.instances_received.labels(active.ae.ae_title).inc()
    ctx.metrics.received_bytes.labels(active.ae.ae_title).inc(data_length)
    ctx.uploader.spooled(active.association_id)
    return Status.SUCCESS


class _DirectInstance:
    """One data set arriving on the fast path: our file meta, then the fragments as received,
    hashed as they are written (the object's SHA-256)."""

    def __init__(
        self,
        ctx: IngestContext,
        active: ActiveAssociation,
        request: StoreRequest,
        transfer_syntax: str,
    ) -> None:
        self._ctx, self._active = ctx, active
        self._request, self._transfer_syntax = request, transfer_syntax
        self._file = ctx.incoming()
        meta = file_meta_bytes(
            request.sop_class_uid,
            request.sop_instance_uid,
            transfer_syntax,
            source_ae_title=active.calling_ae_title,
            implementation_class_uid=ctx.settings.ingest.implementation_class_uid,
            implementation_version_name=ctx.settings.ingest.implementation_version_name,
        )
        self._sha256 = hashlib.sha256(meta)
        self._file.write(meta)

    def write(self, fragment: memoryview) -> None:
        self._file.write(fragment)
        if not self._file.failed:  # a refused data set is not hashed on to its end
            self._sha256.update(fragment)
        self._file.flush()  # start the fragment's way to the disk, as pynetdicom's writes do

    def finish(self) -> int:
        self._file.close()
        self._ctx.metrics.fast_path_stores.labels(self._active.ae.ae_title).inc()
        return store_received(
            self._ctx,
            self._active,
            Path(self._file.name),
            self._transfer_syntax,
            command_sop_class=self._request.sop_class_uid,
            command_sop_instance=self._request.sop_instance_uid,
            file_sha256=self._sha256.hexdigest(),
        )

    def discard(self) -> None:
        self._file.close()
        path = Path(self._file.name)
        self._ctx.incoming.take_failure(path)
        path.unlink(missing_ok=True)


class DirectReceiver:
    """The C-STOREs of one admitted association, taken on the fast path."""

    def __init__(self, ctx: IngestContext, active: ActiveAssociation) -> None:
        self._ctx, self._active = ctx, active

    def begin(self, request: StoreRequest, transfer_syntax: str) -> IncomingInstance | None:
        if not is_valid_uid(request.sop_class_uid) or not is_valid_uid(request.sop_instance_uid):
            return None  # pynetdicom's path refuses it with the status it always gave
        return _DirectInstance(self._ctx, self._active, request, transfer_syntax)


def watch_receiving(event: evt.Event, ctx: IngestContext) -> None:
    """``EVT_REQUESTED``, bound after :func:`~ingest.associations.handle_requested`: an admitted
    association's data sets are written under its receive limits (ingest/receive_guard.py)."""
    assoc = event.assoc
    active = ctx.table.get(assoc)
    if active is not None:
        guard = AssociationGuard(
            ReceiveLimits.of(ctx.settings.ingest),
            active,
            spool_usage=ctx.spool.usage,
            counters=ctx.metrics,
            abort=functools.partial(abort_as_silent, assoc),
        )
        ctx.incoming.watch(receiving_thread(assoc), guard)


def take_stores_directly(event: evt.Event, ctx: IngestContext) -> None:
    """``EVT_REQUESTED``, bound after :func:`~ingest.associations.handle_requested`: an admitted
    association's C-STOREs take the fast path (in prompt mode; plain mode has none)."""
    active = ctx.table.get(event.assoc)
    if active is not None:
        enable_direct_store(event.assoc, DirectReceiver(ctx, active))


def handle_echo(_event: evt.Event) -> int:
    return Status.SUCCESS
