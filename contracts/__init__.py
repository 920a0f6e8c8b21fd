"""The wire contract between the DICOM gateway and the pipelines that consume what it stores.

- When a sender releases an association, the gateway publishes one CloudEvent 1.0 of type
  ``dicomgateway.association.released.v1`` (JSON data: :class:`AssociationReleased`, schema in
  ``contracts/schemas``) with id = association id, so redeliveries can be recognised.
- It goes to the topic exchange ``dicom-gateway`` with routing key
  ``association.released.<pipeline>``; bind ``association.released.*`` to see every pipeline.
- Each instance is stored byte for byte under
  ``<association-id>/<study-uid>/<series-uid>/<sop-instance-uid>.dcm`` in the event's bucket.
- An event stays under the gateway's ``max_event_bytes``: a longer instance list goes into the
  object ``<association-id>/instances.jsonl`` and the event's ``manifest`` names it
  (:mod:`contracts.manifest`; the pipeline client reads it for you).
- For a called AE title with a quiet time (``study_stable_seconds``), the gateway also publishes
  ``dicomgateway.study.stable.v1`` (data: :class:`StudyStable`, every instance of the study it
  holds for that AE title, across associations) with routing key ``study.stable.<pipeline>``,
  once no new instance came for that long; later instances give the next ``revision``, each
  with its own id.
- To send stored objects on to remote DICOM nodes, a pipeline publishes a CloudEvent of type
  ``dicomgateway.export.requested.v1`` (data: :class:`ExportRequested`, naming an association or
  object keys and configured destinations) with routing key ``export.requested``. The export
  service answers with one ``dicomgateway.export.completed.v1`` (data: :class:`ExportCompleted`,
  per destination and per object; statuses by :func:`destination_status` and
  :func:`overall_status`) with routing key ``export.completed`` or the request's
  ``reply_routing_key``. ``export_id`` is the idempotency key, and the completion's id is
  :func:`export_completed_event_id` of it, so a re-published completion can be recognised.
"""

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    association_released_event,
    association_released_from_event,
    event_source,
    export_completed_event,
    export_completed_event_id,
    export_completed_from_event,
    export_requested_event,
    export_requested_from_event,
    parse_event,
    study_stable_event,
    study_stable_from_event,
    to_structured,
)
from contracts.errors import ContractError, InvalidEvent, InvalidObjectKey
from contracts.events import (
    ASSOCIATION_RELEASED_TYPE,
    AssociationReleased,
    InstanceManifest,
    StoredInstance,
)
from contracts.export import (
    EXPORT_COMPLETED_TYPE,
    EXPORT_REQUESTED_TYPE,
    DestinationResult,
    ExportCompleted,
    ExportRequested,
    ExportStatus,
    InstanceOutcome,
    InstanceResult,
    destination_status,
    is_valid_export_id,
    overall_status,
)
from contracts.keys import (
    UNKNOWN_UID_SEGMENT,
    ObjectKeyParts,
    association_prefix,
    is_valid_association_id,
    is_valid_uid,
    manifest_key,
    new_association_id,
    object_key,
    parse_object_key,
)
from contracts.manifest import MANIFEST_MEDIA_TYPE, manifest_line, with_manifest_instances
from contracts.routing import (
    ASSOCIATION_RELEASED_BINDING,
    EXCHANGE,
    EXPORT_COMPLETED_ROUTING_KEY,
    EXPORT_REQUESTED_ROUTING_KEY,
    STUDY_STABLE_BINDING,
    association_released_routing_key,
    is_valid_pipeline,
    is_valid_routing_key,
    study_stable_routing_key,
)
from contracts.studies import STUDY_STABLE_TYPE, StudyAssociation, StudyStable

__all__ = [
    "ASSOCIATION_RELEASED_BINDING",
    "ASSOCIATION_RELEASED_TYPE",
    "CONTENT_TYPE_STRUCTURED",
    "EXCHANGE",
    "EXPORT_COMPLETED_ROUTING_KEY",
    "EXPORT_COMPLETED_TYPE",
    "EXPORT_REQUESTED_ROUTING_KEY",
    "EXPORT_REQUESTED_TYPE",
    "MANIFEST_MEDIA_TYPE",
    "STUDY_STABLE_BINDING",
    "STUDY_STABLE_TYPE",
    "UNKNOWN_UID_SEGMENT",
    "AssociationReleased",
    "ContractError",
    "DestinationResult",
    "ExportCompleted",
    "ExportRequested",
    "ExportStatus",
    "InstanceManifest",
    "InstanceOutcome",
    "InstanceResult",
    "InvalidEvent",
    "InvalidObjectKey",
    "ObjectKeyParts",
    "StoredInstance",
    "StudyAssociation",
    "StudyStable",
    "association_prefix",
    "association_released_event",
    "association_released_from_event",
    "association_released_routing_key",
    "destination_status",
    "event_source",
    "export_completed_event",
    "export_completed_event_id",
    "export_completed_from_event",
    "export_requested_event",
    "export_requested_from_event",
    "is_valid_association_id",
    "is_valid_export_id",
    "is_valid_pipeline",
    "is_valid_routing_key",
    "is_valid_uid",
    "manifest_key",
    "manifest_line",
    "new_association_id",
    "object_key",
    "overall_status",
    "parse_event",
    "parse_object_key",
    "study_stable_event",
    "study_stable_from_event",
    "study_stable_routing_key",
    "to_structured",
    "with_manifest_instances",
]
