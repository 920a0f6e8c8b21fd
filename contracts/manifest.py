"""The instance manifest: an event's instance list as an object beside its instances.

An event stays small whatever the association: when listing every instance inline would make it
larger than the gateway's ``max_event_bytes``, the list goes into an object under the
association's prefix (:func:`contracts.keys.manifest_key`; a stable-study event's under its
event id) and the event carries its key, size and SHA-256
(:class:`~contracts.events.InstanceManifest`) with an empty ``instances``. The object is
JSON Lines: one :class:`~contracts.events.StoredInstance` per line, in the order received.

Writing is :func:`manifest_line` per instance; reading is :func:`with_manifest_instances`, which
checks the object against the claim (size, hash) and the event (count, bytes, prefix). Pure: the
caller moves the bytes.
"""

import hashlib
from collections.abc import Iterable
from typing import Final, TypeVar

from pydantic import ValidationError

from contracts.errors import InvalidEvent
from contracts.events import AssociationReleased, StoredInstance
from contracts.studies import StudyStable

#: Media type of a manifest object.
MANIFEST_MEDIA_TYPE: Final = "application/x-ndjson"

#: An event that may list its instances in a manifest.
Listing = TypeVar("Listing", AssociationReleased, StudyStable)


def manifest_line(instance: StoredInstance) -> bytes:
    """One instance as a manifest line: compact JSON and a newline."""
    return instance.model_dump_json().encode() + b"\n"


def with_manifest_instances(event: Listing, lines: Iterable[bytes]) -> Listing:
    """``event`` (an association's or a study's) with ``instances`` filled in from its
    manifest's ``lines`` (the object read in binary, line by line, newlines kept).

    Raises :class:`InvalidEvent` if the event has no manifest, or if the lines are not the
    object it names (size, SHA-256) or do not list what it announces (count, total bytes, and
    what else the event's model checks, e.g. every key under an association's prefix).
    """
    manifest = event.manifest
    if manifest is None:
        raise InvalidEvent("the event has no manifest")
    digest = hashlib.sha256()
    size = 0
    instances = []
    for number, line in enumerate(lines, start=1):
        digest.update(line)
        size += len(line)
        if size > manifest.size:
            break  # not the object announced; do not parse what may be endless
        try:
            instances.append(StoredInstance.model_validate_json(line))
        except ValidationError as exc:
            raise InvalidEvent(
                f"manifest {manifest.object_key} line {number} is not an instance: {exc}"
            ) from exc
    if size != manifest.size or digest.hexdigest() != manifest.sha256:
        raise InvalidEvent(
            f"manifest {manifest.object_key} is not the object the event names "
            f"(expected {manifest.size} bytes with SHA-256 {manifest.sha256})"
        )
    try:
        return type(event).model_validate({**event.model_dump(), "instances": instances})
    except ValidationError as exc:
        raise InvalidEvent(
            f"manifest {manifest.object_key} does not match its event: {exc}"
        ) from exc
