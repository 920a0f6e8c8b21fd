"""Building a study's stable event from what the journal holds of it. Pure.

The event id is derived from the study's random key and the revision, so the same revision
built again after a crash (its manifest stored, its event not yet in the outbox) has the same
id and manifest key, and each revision a new one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    event_source,
    study_stable_event,
    to_structured,
)
from contracts.events import InstanceManifest, StoredInstance
from contracts.routing import study_stable_routing_key
from contracts.studies import StudyAssociation, StudyStable
from ingest.outbox import EventKind, OutboxEvent
from ingest.studies import DueStudy, StudySource

#: Namespace of the name-based UUIDs identifying stable-study events.
STUDY_EVENT_ID_NAMESPACE: Final = uuid.UUID("0c8f6a52-3d1e-4b7a-9f0e-6a2d4c9b8e17")


def study_event_id(study: DueStudy) -> str:
    """The id of the study's next stable event (revision ``study.revision + 1``)."""
    return str(uuid.uuid5(STUDY_EVENT_ID_NAMESPACE, f"{study.study_key}/{study.revision + 1}"))


def study_data(
    study: DueStudy,
    sources: Sequence[StudySource],
    *,
    bucket: str,
    instances: tuple[StoredInstance, ...],
    total_bytes: int,
    manifest: InstanceManifest | None = None,
    list_associations: bool = True,
) -> StudyStable:
    """The event data: ``instances`` listed inline, or none and the ``manifest`` naming them;
    without ``list_associations`` (a manifest event that would be too large) only their
    count."""
    return StudyStable(
        study_instance_uid=study.study_instance_uid,
        revision=study.revision + 1,
        called_ae_title=study.called_ae_title,
        pipeline=study.pipeline,
        stable_after_seconds=study.stable_seconds,
        last_stored_at=study.changed_at,
        instance_count=sum(source.instance_count for source in sources),
        total_bytes=total_bytes,
        bucket=bucket,
        association_count=len(sources),
        associations=tuple(
            StudyAssociation(
                association_id=source.association_id,
                calling_ae_title=source.calling_ae_title,
                remote_host=source.remote_host,
                released_at=source.released_at,
                instance_count=source.instance_count,
            )
            for source in sources
            if list_associations
        ),
        instances=instances,
        manifest=manifest,
    )


def study_event(
    data: StudyStable, *, event_id: str, instance_name: str, now: datetime
) -> OutboxEvent:
    """The outbox entry of a stable study."""
    event = study_stable_event(
        data,
        event_id=event_id,
        source=event_source(instance_name, data.called_ae_title),
        time=now,
    )
    return OutboxEvent(
        event_id=event_id,
        association_id=event_id,
        routing_key=study_stable_routing_key(data.pipeline),
        content_type=CONTENT_TYPE_STRUCTURED,
        body=to_structured(event),
        kind=EventKind.STUDY,
    )
