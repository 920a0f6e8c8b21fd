"""The wire contract between the DICOM gateway and the pipelines that consume what it stores.

- When a sender releases an association, the gateway publishes one CloudEvent 1.0 of type
  ``dicomgateway.association.released.v1`` (JSON data: :class:`AssociationReleased`, schema in
  ``contracts/schemas``) with id = association id, so redeliveries can be recognised.
- It goes to the topic exchange ``dicom-gateway`` with routing key
  ``association.released.<pipeline>``; bind ``association.released.*`` to see every pipeline.
- Each instance is stored byte for byte under
  ``<association-id>/<study-uid>/<series-uid>/<sop-instance-uid>.dcm`` in the event's bucket.
"""

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    association_released_event,
    association_released_from_event,
    event_source,
    parse_event,
    to_structured,
)
from contracts.errors import ContractError, InvalidEvent, InvalidObjectKey
from contracts.events import ASSOCIATION_RELEASED_TYPE, AssociationReleased, StoredInstance
from contracts.keys import (
    ObjectKeyParts,
    association_prefix,
    is_valid_association_id,
    is_valid_uid,
    new_association_id,
    object_key,
    parse_object_key,
)
from contracts.routing import (
    ASSOCIATION_RELEASED_BINDING,
    EXCHANGE,
    association_released_routing_key,
    is_valid_pipeline,
)

__all__ = [
    "ASSOCIATION_RELEASED_BINDING",
    "ASSOCIATION_RELEASED_TYPE",
    "CONTENT_TYPE_STRUCTURED",
    "EXCHANGE",
    "AssociationReleased",
    "ContractError",
    "InvalidEvent",
    "InvalidObjectKey",
    "ObjectKeyParts",
    "StoredInstance",
    "association_prefix",
    "association_released_event",
    "association_released_from_event",
    "association_released_routing_key",
    "event_source",
    "is_valid_association_id",
    "is_valid_pipeline",
    "is_valid_uid",
    "new_association_id",
    "object_key",
    "parse_event",
    "parse_object_key",
    "to_structured",
]
