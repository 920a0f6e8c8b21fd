"""Layout of the object keys under which received instances are stored.

``<association-id>/<study-uid>/<series-uid>/<sop-instance-uid>.dcm``: one prefix per association,
so a pipeline can list or delete exactly what one association delivered. Every part is checked
against a strict grammar (UIDs are digits and dots, the association id is a canonical UUID), which
is what keeps ``..``, slashes and other path characters out of keys.

An instance stored although its data set has no valid Study or Series Instance UID (ingest's
``malformed_instances = "store"``) has :data:`UNKNOWN_UID_SEGMENT` in that UID's place:
``<association-id>/unknown/unknown/<sop-instance-uid>.dcm``. The SOP Instance UID, from the
C-STORE command, is always there. The placeholder can never be a UID (UIDs are digits and dots),
so a key still names its parts unambiguously, and still has four segments.
"""

import re
import uuid
from typing import Final, NamedTuple

from contracts.errors import InvalidObjectKey

#: Longest UID that DICOM allows (PS3.5 section 9.1).
UID_MAX_LENGTH: Final = 64
#: A UID's grammar: dot-separated components of ASCII digits, no leading zero unless the component
#: is exactly "0". Written so that Python's ``re`` and JSON Schema (ECMA-262) read it the same way.
UID_PATTERN: Final = r"^(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*$"
#: An association id's grammar: a UUID in lowercase canonical form.
ASSOCIATION_ID_PATTERN: Final = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
#: Suffix of every object key.
OBJECT_KEY_SUFFIX: Final = ".dcm"
#: The key segment that stands for a Study or Series Instance UID the data set lacks (or has
#: only an invalid one of): a word, so that it can never be taken for a UID.
UNKNOWN_UID_SEGMENT: Final = "unknown"
#: Name, under an association's prefix, of the object listing its instances when the list is
#: too long to travel in the event (see :mod:`contracts.manifest`).
MANIFEST_NAME: Final = "instances.jsonl"

# Used with fullmatch, because "$" alone would also accept a trailing newline.
_UID: Final = re.compile(UID_PATTERN)
_ASSOCIATION_ID: Final = re.compile(ASSOCIATION_ID_PATTERN)


class ObjectKeyParts(NamedTuple):
    """The parts an object key is built from, in key order."""

    association_id: str
    #: None where the key has :data:`UNKNOWN_UID_SEGMENT`.
    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str


def is_valid_uid(uid: str) -> bool:
    """Whether ``uid`` is a syntactically valid DICOM UID."""
    return len(uid) <= UID_MAX_LENGTH and _UID.fullmatch(uid) is not None


def is_valid_association_id(value: str) -> bool:
    """Whether ``value`` is an association id: a UUID in lowercase canonical form."""
    return _ASSOCIATION_ID.fullmatch(value) is not None


def new_association_id() -> str:
    """A fresh, random association id."""
    return str(uuid.uuid4())


def association_prefix(association_id: str) -> str:
    """The key prefix under which all instances of one association are stored."""
    if not is_valid_association_id(association_id):
        raise InvalidObjectKey(f"{association_id!r} is not a valid association id")
    return f"{association_id}/"


def manifest_key(association_id: str) -> str:
    """The key of the association's instance manifest: ``<association-id>/instances.jsonl``."""
    return association_prefix(association_id) + MANIFEST_NAME


def is_manifest_key(key: str) -> bool:
    """Whether ``key`` is the key of an association's instance manifest."""
    association_id, _, name = key.partition("/")
    return name == MANIFEST_NAME and is_valid_association_id(association_id)


def check_stored_key(key: str) -> None:
    """Raises :class:`InvalidObjectKey` unless ``key`` is a key the gateway stores under: an
    instance's object key or an association's manifest key."""
    if not is_manifest_key(key):
        parse_object_key(key)


def object_key(
    association_id: str,
    study_instance_uid: str | None,
    series_instance_uid: str | None,
    sop_instance_uid: str,
) -> str:
    """The object key of one stored instance; a study or series UID of None (the data set has
    no valid one) is written as :data:`UNKNOWN_UID_SEGMENT`.

    Raises :class:`InvalidObjectKey` naming the first part that is not valid.
    """
    prefix = association_prefix(association_id)
    for name, uid in (
        ("study instance UID", study_instance_uid),
        ("series instance UID", series_instance_uid),
        ("SOP instance UID", sop_instance_uid),
    ):
        if uid is not None and not is_valid_uid(uid):
            raise InvalidObjectKey(f"{uid!r} is not a valid {name}")
    study = UNKNOWN_UID_SEGMENT if study_instance_uid is None else study_instance_uid
    series = UNKNOWN_UID_SEGMENT if series_instance_uid is None else series_instance_uid
    return f"{prefix}{study}/{series}/{sop_instance_uid}{OBJECT_KEY_SUFFIX}"


def _uid_segment(segment: str) -> str | None:
    return None if segment == UNKNOWN_UID_SEGMENT else segment


def parse_object_key(key: str) -> ObjectKeyParts:
    """Split an object key into its parts; the inverse of :func:`object_key`.

    Raises :class:`InvalidObjectKey` for anything :func:`object_key` could not have produced.
    """
    segments = key.split("/")
    if len(segments) != 4 or not segments[3].endswith(OBJECT_KEY_SUFFIX):
        raise InvalidObjectKey(
            f"{key!r} is not an object key "
            f"(<association-id>/<study-uid>/<series-uid>/<sop-instance-uid>{OBJECT_KEY_SUFFIX})"
        )
    parts = ObjectKeyParts(
        segments[0],
        _uid_segment(segments[1]),
        _uid_segment(segments[2]),
        segments[3].removesuffix(OBJECT_KEY_SUFFIX),
    )
    object_key(*parts)  # validates every part with the same rules as building a key
    return parts
