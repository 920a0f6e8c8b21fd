"""Receiving instances: ingest's C-STORE and C-ECHO handlers.

pynetdicom has already written the data set as received to a file of the spool
(gateway/netdicom/modes.py, ingest/incoming.py); :func:`handle_store` checks it, adopts it into
the association's directory, fsynced, and records it in the journal before answering. It runs
on the association's own thread, with its dependencies bound explicitly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from contracts.keys import is_valid_uid, object_key
from gateway.dicom_status import Status
from gateway.errors import InstanceRejected, JournalError
from ingest.associations import IngestContext
from ingest.journal import AssociationNotOpen, SpooledInstance
from ingest.part10 import data_set_offset, read_identity
from ingest.well_formed import check_well_formed

log = logging.getLogger(__name__)


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
    ctx.uploader.spooled(active.association_id)
    return Status.SUCCESS


def handle_echo(_event: evt.Event) -> int:
    return Status.SUCCESS
