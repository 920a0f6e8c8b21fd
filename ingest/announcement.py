"""Building the association-released event from what the journal recorded. Pure."""

from __future__ import annotations

from datetime import datetime

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    association_released_event,
    event_source,
    to_structured,
)
from contracts.events import AssociationReleased, StoredInstance
from contracts.routing import association_released_routing_key
from ingest.journal import AssociationRecord, SpooledInstance
from ingest.outbox import OutboxEvent


def released_data(
    association: AssociationRecord, instances: list[SpooledInstance], bucket: str
) -> AssociationReleased:
    """The event data; every instance must already be stored (size and sha256 known)."""
    if association.released_at is None:
        raise ValueError(f"association {association.association_id} was not released")
    stored = []
    for instance in instances:
        if instance.size is None or instance.sha256 is None:
            raise ValueError(f"{instance.object_key} is not stored yet")
        stored.append(
            StoredInstance(
                sop_instance_uid=instance.sop_instance_uid,
                sop_class_uid=instance.sop_class_uid,
                transfer_syntax_uid=instance.transfer_syntax_uid,
                study_instance_uid=instance.study_instance_uid,
                series_instance_uid=instance.series_instance_uid,
                object_key=instance.object_key,
                size=instance.size,
                sha256=instance.sha256,
            )
        )
    return AssociationReleased(
        association_id=association.association_id,
        called_ae_title=association.called_ae_title,
        calling_ae_title=association.calling_ae_title,
        remote_host=association.remote_host,
        remote_port=association.remote_port,
        pipeline=association.pipeline,
        started_at=association.started_at,
        released_at=association.released_at,
        instance_count=len(stored),
        total_bytes=sum(s.size for s in stored),
        bucket=bucket,
        instances=tuple(stored),
    )


def released_event(
    association: AssociationRecord,
    instances: list[SpooledInstance],
    *,
    bucket: str,
    instance_name: str,
    now: datetime,
) -> OutboxEvent:
    """The outbox entry for a released association: routing key, stable id and body."""
    data = released_data(association, instances, bucket)
    event = association_released_event(
        data, source=event_source(instance_name, association.called_ae_title), time=now
    )
    return OutboxEvent(
        event_id=data.association_id,
        association_id=data.association_id,
        routing_key=association_released_routing_key(association.pipeline),
        content_type=CONTENT_TYPE_STRUCTURED,
        body=to_structured(event),
    )
