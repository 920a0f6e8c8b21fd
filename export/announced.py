"""What a request's objects are, known before any of them is fetched: from instance manifests.

An association whose instance list was too long for its event has it in a manifest object
beside its instances (contracts/manifest.py): the SOP class and transfer syntax of every
instance, one JSON line each. Read before the downloads start, it lets the first association
propose every context the request needs and open at once. Objects no manifest lists (the
associations with their list inline in the event, which export never sees) are planned from
their file meta as they are fetched (:func:`export.plan.passes`).

Object metadata written at upload was measured as the other source and not taken: SeaweedFS
lists no user metadata, so it costs one HEAD per object, 0.15 s and 0.14 s of client CPU for
300 CT objects at 8 at a time, where fetching them takes 0.41 s and 0.35 s.

What a manifest says is checked against each object's own file meta once fetched
(:func:`mismatch`): an object that is not what its list says fails, it is never sent over a
context proposed for something else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import ValidationError

from contracts.events import StoredInstance
from contracts.keys import manifest_key, parse_object_key
from export.plan import Context, InstanceMeta
from gateway.errors import ObjectMissing, WorkingSpaceFull
from gateway.objectstore import ObjectStore

log = logging.getLogger(__name__)

#: Manifests read for one request at most (one per association its keys come from): a request
#: naming objects of more associations than this is planned from file meta as it is fetched.
MAX_MANIFESTS = 8


def manifests_to_read(keys: Sequence[str]) -> list[str]:
    """The instance manifests that may list ``keys`` (a request by object keys): those of
    their associations, in order of first use; none when they come from more than
    :data:`MAX_MANIFESTS` associations."""
    associations: dict[str, None] = {}
    for key in keys:
        associations[parse_object_key(key).association_id] = None
    if len(associations) > MAX_MANIFESTS:
        return []
    return [manifest_key(association) for association in associations]


def announced_instances(lines: Iterable[bytes], wanted: set[str]) -> dict[str, InstanceMeta]:
    """What the manifest ``lines`` say about the objects in ``wanted``, by key.

    A line that is not an instance makes the whole manifest untrusted ({}), so that a damaged
    object plans nothing: those objects are planned from their file meta instead.
    """
    found: dict[str, InstanceMeta] = {}
    for line in lines:
        try:
            instance = StoredInstance.model_validate_json(line)
        except ValidationError:
            return {}
        if instance.object_key in wanted:
            found[instance.object_key] = InstanceMeta(
                object_key=instance.object_key,
                sop_class_uid=instance.sop_class_uid,
                sop_instance_uid=instance.sop_instance_uid,
                transfer_syntax_uid=instance.transfer_syntax_uid,
            )
    return found


def mismatch(announced: Context | None, found: InstanceMeta) -> str | None:
    """Why an object whose file meta says ``found`` cannot be sent as ``announced``; None when
    nothing was announced or it is what was announced."""
    if announced is None or announced == found.context:
        return None
    return (
        f"stored object is SOP class {found.sop_class_uid} in transfer syntax "
        f"{found.transfer_syntax_uid}, but its association's instance manifest lists it as "
        f"{announced[0]} in {announced[1]}: not sent (it is not the object listed)"
    )


def read_announced(
    store: ObjectStore, keys: Sequence[str], manifests: Sequence[str], workdir: Path
) -> dict[str, InstanceMeta]:
    """The instances of ``keys`` that the ``manifests`` list, by key (blocking).

    A manifest that is missing, damaged or has no room to be fetched plans nothing; a storage
    outage propagates (the request is tried again later, as for its objects).
    """
    wanted = set(keys)
    found: dict[str, InstanceMeta] = {}
    for index, key in enumerate(manifests):
        target = workdir / f"manifest-{index}.jsonl"
        try:
            store.download(key, target)
            with target.open("rb") as lines:
                listed = announced_instances(lines, wanted)
        except ObjectMissing:
            continue  # most associations have their list in their event
        except WorkingSpaceFull as exc:
            log.warning("instance manifest %s not read: %s", key, exc)
            continue
        finally:
            target.unlink(missing_ok=True)
        if not listed:
            log.warning("instance manifest %s is damaged or lists no object requested", key)
        found.update(listed)
    return found
