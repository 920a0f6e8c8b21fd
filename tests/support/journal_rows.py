"""Journal rows for the unit tests of the journal, the uploader's queue and what is built
from them: an association admitted at a fixed time, and its spooled instances."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.keys import new_association_id, object_key
from ingest.journal import AssociationRecord, Journal, SpooledInstance
from ingest.policy import Limits

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def record(association_id: str) -> AssociationRecord:
    return AssociationRecord(
        association_id=association_id,
        called_ae_title="GATEWAY",
        calling_ae_title="CT01",
        remote_host="127.0.0.1",
        remote_port=40000,
        pipeline="lung",
        started_at=STARTED,
    )


def begin(journal: Journal) -> str:
    association_id = new_association_id()
    assert journal.begin_association(record(association_id), Limits(1000)) is None
    return association_id


def instance(association_id: str, sop: str, seq: int, spool_name: str = "") -> SpooledInstance:
    return SpooledInstance(
        association_id=association_id,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        spool_name=spool_name or f"{seq:06d}.dcm",
        data_offset=300,
        data_length=1000,
        received_seq=seq,
        object_key=object_key(association_id, "1.2.3", "1.2.3.4", sop),
    )
