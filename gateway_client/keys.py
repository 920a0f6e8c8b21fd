"""Where a pipeline stores the objects it derives, inside the gateway's own key layout.

The export service accepts only keys of the layout in :mod:`contracts.keys`
(``<association-id>/<study-uid>/<series-uid>/<sop-instance-uid>.dcm``), so a derived object
gets the same shape under a *derived association id*::

    uuid5(DERIVED_NAMESPACE, "<source association id>/<producer>")

- It is a canonical UUID, so :func:`contracts.keys.parse_object_key` and export accept the key,
  both in ``object_keys`` and as ``association_id`` (every object one producer derived from one
  association).
- It is a version 5 (name-based) UUID, while ingest gives its associations random version 4
  ids, so a derived prefix never mixes with received instances and can be told apart from them
  (:func:`is_derived_association_id`).
- It depends only on the source association and the producer's name, so processing a
  redelivered event again writes the same keys instead of new copies.
"""

from __future__ import annotations

import uuid
from typing import Final

from contracts.keys import association_prefix, is_valid_association_id, object_key

#: Namespace of the derived association ids (see the module docstring).
DERIVED_NAMESPACE: Final = uuid.UUID("8f1d3b6e-4c2a-5e7f-9a0b-1c2d3e4f5a6b")
_NAME_BASED_VERSION: Final = 5


def derived_association_id(source_association_id: str, producer: str) -> str:
    """The association id under which ``producer`` stores what it derived from an association.

    ``producer`` names the pipeline (any non-empty text); two producers never share a prefix.
    """
    association_prefix(source_association_id)  # InvalidObjectKey for anything but an id
    if not producer:
        raise ValueError("a producer name must not be empty")
    return str(uuid.uuid5(DERIVED_NAMESPACE, f"{source_association_id}/{producer}"))


def derived_object_key(
    source_association_id: str,
    producer: str,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
) -> str:
    """The object key of one derived instance (see the module docstring)."""
    return object_key(
        derived_association_id(source_association_id, producer),
        study_instance_uid,
        series_instance_uid,
        sop_instance_uid,
    )


def is_derived_association_id(association_id: str) -> bool:
    """Whether ``association_id`` is a derived one rather than a received association's."""
    return (
        is_valid_association_id(association_id)
        and uuid.UUID(association_id).version == _NAME_BASED_VERSION
    )
