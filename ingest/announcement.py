"""Building the association-released event from what the journal recorded. Pure.

An event lists its instances inline while it stays within ``max_event_bytes``; beyond that the
list goes into a manifest object (:mod:`contracts.manifest`) and the event names it. Whether a
list can fit is known before building it (:func:`may_fit_inline`), so a huge association never
builds an inline event in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    association_released_event,
    event_source,
    to_structured,
)
from contracts.events import AssociationReleased, InstanceManifest, StoredInstance
from contracts.keys import manifest_key
from contracts.routing import association_released_routing_key
from ingest.journal import AssociationRecord, SpooledInstance
from ingest.outbox import OutboxEvent

#: Fewest bytes one instance takes in an event's JSON (field names, a 64-digit hash, a key
#: holding a 36-character association id, one-digit UIDs): a bound on how many can fit.
MIN_LISTED_INSTANCE_BYTES: Final = 256


@dataclass(frozen=True)
class ManifestSummary:
    """A manifest object written and stored: what the event says of it and of the list."""

    size: int
    sha256: str
    instance_count: int
    total_bytes: int
    #: Study of the first instance that has one: the event's subject.
    first_study_instance_uid: str | None


def may_fit_inline(instance_count: int, max_event_bytes: int) -> bool:
    """Whether ``instance_count`` instances could be listed in an event of ``max_event_bytes``
    (False: go straight to a manifest)."""
    return instance_count * MIN_LISTED_INSTANCE_BYTES <= max_event_bytes


def stored_instance(instance: SpooledInstance) -> StoredInstance:
    """What the event (or manifest) says of one instance; it must be stored already."""
    if instance.size is None or instance.sha256 is None:
        raise ValueError(f"{instance.object_key} is not stored yet")
    return StoredInstance(
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        # '' in the journal: a data set stored without a valid UID for it (not well-formed).
        study_instance_uid=instance.study_instance_uid or None,
        series_instance_uid=instance.series_instance_uid or None,
        object_key=instance.object_key,
        size=instance.size,
        sha256=instance.sha256,
        well_formed=instance.malformed_reason is None,
        reason=instance.malformed_reason,
    )


def released_data(
    association: AssociationRecord, instances: list[SpooledInstance], bucket: str
) -> AssociationReleased:
    """The event data listing every instance inline."""
    stored = tuple(stored_instance(instance) for instance in instances)
    return _data(
        association,
        bucket=bucket,
        instances=stored,
        instance_count=len(stored),
        total_bytes=sum(s.size for s in stored),
        manifest=None,
    )


def manifest_data(
    association: AssociationRecord, summary: ManifestSummary, bucket: str
) -> AssociationReleased:
    """The event data naming the association's stored manifest instead of listing instances."""
    manifest = InstanceManifest(
        object_key=manifest_key(association.association_id),
        size=summary.size,
        sha256=summary.sha256,
    )
    return _data(
        association,
        bucket=bucket,
        instances=(),
        instance_count=summary.instance_count,
        total_bytes=summary.total_bytes,
        manifest=manifest,
    )


def released_event(
    association: AssociationRecord,
    data: AssociationReleased,
    *,
    instance_name: str,
    now: datetime,
    subject: str | None = None,
) -> OutboxEvent:
    """The outbox entry for a released association: routing key, stable id and body."""
    event = association_released_event(
        data,
        source=event_source(instance_name, association.called_ae_title),
        time=now,
        subject=subject,
    )
    return OutboxEvent(
        event_id=data.association_id,
        association_id=data.association_id,
        routing_key=association_released_routing_key(association.pipeline),
        content_type=CONTENT_TYPE_STRUCTURED,
        body=to_structured(event),
    )


def _data(
    association: AssociationRecord,
    *,
    bucket: str,
    instances: tuple[StoredInstance, ...],
    instance_count: int,
    total_bytes: int,
    manifest: InstanceManifest | None,
) -> AssociationReleased:
    if association.released_at is None:
        raise ValueError(f"association {association.association_id} was not released")
    return AssociationReleased(
        association_id=association.association_id,
        called_ae_title=association.called_ae_title,
        calling_ae_title=association.calling_ae_title,
        remote_host=association.remote_host,
        remote_port=association.remote_port,
        pipeline=association.pipeline,
        started_at=association.started_at,
        released_at=association.released_at,
        instance_count=instance_count,
        total_bytes=total_bytes,
        bucket=bucket,
        instances=instances,
        manifest=manifest,
    )
