"""Part 10 framing without re-encoding: our file meta in front of the sender's data set bytes.

pynetdicom's chunked receive writes ``preamble + its own file meta + data set`` to a temporary
file. We keep that file untouched in the spool and, when the object is written to storage, put
*our* file meta (negotiated transfer syntax, the sender's AE title, our implementation UID) in
front of the data set bytes. The data set is never decoded and re-encoded, so it stays byte for
byte what arrived on the wire. Of the data set only the UIDs that place the instance are read
(:func:`read_identity`); that its encoding holds together is checked first, by
:mod:`ingest.well_formed`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag

from contracts.keys import is_valid_uid
from gateway.dicom_status import Status
from gateway.errors import InstanceRejected
from ingest.inflating import Inflating

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
#: Transfer syntaxes whose data set is deflated explicit VR little endian (PS3.5 A.5, A.7):
#: Deflated Explicit VR Little Endian and JPIP Referenced Deflate.
DEFLATED_TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})

_PREAMBLE = b"\x00" * 128 + b"DICM"
#: The part of an invalid UID that may be quoted: its leading digits and dots (at most 64).
_UID_LEAD = re.compile(r"[0-9.]{1,64}")
# (0002,0000) UL, explicit VR little endian: tag, VR, 2-byte length, 4-byte value.
_GROUP_LENGTH_HEADER = struct.pack("<HH2sH", 0x0002, 0x0000, b"UL", 4)
_LAST_IDENTITY_TAG = Tag(0x0020, 0x000E)  # Series Instance UID: nothing after it is needed
_IDENTITY_TAGS = [
    Tag(0x0008, 0x0016),  # SOP Class UID
    Tag(0x0008, 0x0018),  # SOP Instance UID
    Tag(0x0020, 0x000D),  # Study Instance UID
    Tag(0x0020, 0x000E),  # Series Instance UID
]
#: The identity's tags as numbers, in :data:`_IDENTITY_TAGS`' order (for ingest.well_formed).
IDENTITY_TAGS = tuple(int(tag) for tag in _IDENTITY_TAGS)
#: pydicom defers reading larger values (``defer_size`` below), and gives no text for them.
LARGEST_IDENTITY_VALUE = 1024

#: The identity's UIDs as sent (None for one the data set lacks), in :data:`IDENTITY_TAGS`'
#: order, when already read (see ingest.well_formed.walk); None: read them with pydicom.
KnownUids = list[str | None] | None


@dataclass(frozen=True)
class InstanceIdentity:
    sop_class_uid: str
    sop_instance_uid: str
    #: None only from :func:`read_identity_as_received`: the data set has no valid one.
    study_instance_uid: str | None
    series_instance_uid: str | None


def data_set_offset(received: BinaryIO) -> int:
    """Offset of the data set in a file that starts with a preamble and a file meta group.

    pynetdicom always writes the group length element first, so the offset is read from it
    instead of parsing the meta group.
    """
    head = received.read(len(_PREAMBLE) + 12)
    if len(head) < len(_PREAMBLE) + 12 or head[128:132] != b"DICM":
        raise InstanceRejected(Status.OUT_OF_RESOURCES, "received file has no Part 10 header")
    if head[132:140] != _GROUP_LENGTH_HEADER:
        raise InstanceRejected(Status.OUT_OF_RESOURCES, "received file meta has no group length")
    (group_length,) = struct.unpack("<I", head[140:144])
    return len(_PREAMBLE) + 12 + int(group_length)


def _element(tag: int, vr: bytes, value: bytes, padding: bytes) -> bytes:
    """One explicit VR little endian element of group 0002, padded to an even length."""
    if len(value) % 2:
        value += padding
    if vr == b"OB":  # a 2-byte reserved field, then a 4-byte length
        return struct.pack("<HH2s2xI", 0x0002, tag, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, tag, vr, len(value)) + value


def file_meta_bytes(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    *,
    source_ae_title: str,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """Preamble, ``DICM`` and the file meta group that precede the data set in the object.

    Encoded directly, as pydicom's ``write_file_meta_info`` encodes the same elements (a unit
    test compares the two): building it with pydicom cost a quarter of the upload threads'
    Python time, and the C-STORE fast path builds it for every instance it receives.
    """
    body = b"".join(
        (
            _element(0x0001, b"OB", b"\x00\x01", b"\0"),
            _element(0x0002, b"UI", sop_class_uid.encode("ascii"), b"\0"),
            _element(0x0003, b"UI", sop_instance_uid.encode("ascii"), b"\0"),
            _element(0x0010, b"UI", transfer_syntax_uid.encode("ascii"), b"\0"),
            _element(0x0012, b"UI", implementation_class_uid.encode("ascii"), b"\0"),
            _element(0x0013, b"SH", implementation_version_name.encode("ascii"), b" "),
            _element(0x0016, b"AE", source_ae_title.encode("ascii"), b" "),
        )
    )
    return _PREAMBLE + _GROUP_LENGTH_HEADER + struct.pack("<I", len(body)) + body


def quoted_uid(text: str) -> str:
    """``text``, sent as a UID, quoted for the log: whole when it is a valid UID, else no more of
    it than its leading digits and dots, since a sender may put a patient's name in a UID field,
    and logs must not carry it."""
    if is_valid_uid(text):
        return repr(text)
    lead = _UID_LEAD.match(text)
    shown = lead.group() if lead else ""
    more = len(text) - len(shown)
    tail = f" and {more} other character{'s' if more != 1 else ''}" if more else ""
    return f"{shown!r}{tail}"


def invalid_uid(name: str, text: str) -> str:
    """Why ``text`` is refused as the UID ``name`` (quoted as :func:`quoted_uid` quotes it)."""
    return f"{name} {quoted_uid(text)} is not a valid UID"


def _text(data_set: Dataset, tag: BaseTag) -> str | None:
    """The UID's text as sent (None: no such element), without pydicom's value conversion
    (which warns on bad UIDs)."""
    if tag not in data_set:
        return None
    value = data_set.get_item(tag).value
    return uid_text(value if isinstance(value, bytes) else str(value).encode("ascii", "replace"))


def uid_text(raw: bytes) -> str:
    """A UID element's value as text, its padding stripped, whatever bytes it holds."""
    return raw.decode("ascii", "replace").rstrip("\x00 ")


def _uid(text: str | None, fallback: str, name: str) -> str:
    """``text``, or ``fallback`` when the data set has no such element; refused unless valid."""
    chosen = fallback if text is None else text
    if not is_valid_uid(chosen):
        raise InstanceRejected(Status.CANNOT_UNDERSTAND, invalid_uid(name, chosen))
    return chosen


class _Prefix:
    """The first ``length`` bytes of a stream from its position: what lies beyond is not
    there for pydicom, which sees the data end where the well-formed elements end."""

    def __init__(self, stream: BinaryIO, length: int) -> None:
        self._stream = stream
        self._end = stream.tell() + length

    def read(self, size: int | None = -1) -> bytes:
        remaining = max(self._end - self._stream.tell(), 0)
        return self._stream.read(remaining if size is None or size < 0 else min(size, remaining))

    def seek(self, offset: int, whence: int = 0) -> int:
        target = {0: offset, 1: self._stream.tell() + offset, 2: self._end + offset}[whence]
        return self._stream.seek(min(target, self._end))

    def tell(self) -> int:
        return self._stream.tell()


def _read_uids(
    received: BinaryIO, offset: int, transfer_syntax_uid: str, length: int | None
) -> list[str | None]:
    """The texts of :data:`_IDENTITY_TAGS` in the data set (None for each one it lacks), read
    from its first ``length`` bytes (None: all), stopping before anything large."""
    received.seek(offset)
    stream: BinaryIO = received
    if transfer_syntax_uid in DEFLATED_TRANSFER_SYNTAXES:
        stream = Inflating(received)  # type: ignore[assignment]
    if length is not None:
        # Not read_dataset's bytelength: looking for specific tags, pydicom reads on past it.
        stream = _Prefix(stream, length)  # type: ignore[assignment]

    def past_identity(tag: BaseTag, _vr: str | None, _length: int) -> bool:
        return bool(tag > _LAST_IDENTITY_TAG)

    try:
        data_set = read_dataset(
            stream,
            is_implicit_VR=transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN,
            is_little_endian=transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN,
            stop_when=past_identity,
            defer_size=LARGEST_IDENTITY_VALUE,
            specific_tags=list(_IDENTITY_TAGS),
        )
        return [_text(data_set, tag) for tag in _IDENTITY_TAGS]
    except Exception as exc:
        # pydicom raises what its code meets in garbage (InvalidDicomError, ValueError, but
        # also NotImplementedError for an unknown VR, AttributeError for a deferred value of
        # a stream without a name), reading or converting: each is this data set's problem,
        # never the service's.
        raise InstanceRejected(
            Status.CANNOT_UNDERSTAND, f"data set cannot be parsed: {exc}"
        ) from exc


def _mismatch(name: str, in_data_set: str, in_command: str) -> InstanceRejected:
    # The sender's success is for the instance its command names. Filed under another UID it
    # is not the one the sender will ask for, and it could silently replace another instance
    # of the association (a UID received twice is stored once). dcmtk's storescp refuses it so.
    return InstanceRejected(
        Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
        f"{name} {quoted_uid(in_data_set)} in the data set is not the command's "
        f"{quoted_uid(in_command)}",
    )


def read_identity(  # noqa: PLR0917 (the command's two UIDs, named)
    received: BinaryIO,
    offset: int,
    transfer_syntax_uid: str,
    command_sop_class_uid: str,
    command_sop_instance_uid: str,
    known: KnownUids = None,
) -> InstanceIdentity:
    """Read the four UIDs that place an instance, stopping before anything large (or take
    them as ``known``).

    The SOP class and instance come from the data set and fall back to the C-STORE command's
    Affected SOP Class/Instance UID when the data set lacks them; when both have them, they must
    be the same (else *data set does not match SOP class*). An unknown transfer syntax is read
    as explicit VR little endian, which is what private syntaxes use in practice. Every one of
    the four must be a valid UID (else *cannot understand*).
    """
    sop_class, sop_instance, study, series = (
        _read_uids(received, offset, transfer_syntax_uid, None) if known is None else known
    )
    identity = InstanceIdentity(
        sop_class_uid=_uid(sop_class, command_sop_class_uid, "SOP Class UID"),
        sop_instance_uid=_uid(sop_instance, command_sop_instance_uid, "SOP Instance UID"),
        study_instance_uid=_uid(study, "", "Study Instance UID"),
        series_instance_uid=_uid(series, "", "Series Instance UID"),
    )
    for name, in_data_set, in_command in (
        ("SOP Class UID", identity.sop_class_uid, command_sop_class_uid),
        ("SOP Instance UID", identity.sop_instance_uid, command_sop_instance_uid),
    ):
        if in_command and in_data_set != in_command:
            raise _mismatch(name, in_data_set, in_command)
    return identity


def read_identity_as_received(  # noqa: PLR0917 (the command's two UIDs, named)
    received: BinaryIO,
    offset: int,
    transfer_syntax_uid: str,
    command_sop_class_uid: str,
    command_sop_instance_uid: str,
    whole_length: int | None,
    known: KnownUids = None,
) -> tuple[InstanceIdentity, list[str]]:
    """The identity of an instance to be stored whatever its data set holds, and what is wrong
    with it (``ingest.malformed_instances = "store"``).

    Only the data set's first ``whole_length`` bytes are read (None: all): those that were
    walked as well-formed. The SOP Class and Instance UIDs are the command's; one the data set
    has must be the same (else *data set does not match SOP class*, as in
    :func:`read_identity`), and the command's must be valid (else *cannot understand*: they
    name the instance and its object). A Study or Series Instance UID the data set lacks, or
    has only an invalid one of, is None, and the list says so; so does a data set that pydicom
    cannot read (the command's UIDs are then taken as they are). ``known``: the UIDs, read
    already from those bytes.
    """
    problems: list[str] = []
    try:
        sop_class, sop_instance, study, series = (
            _read_uids(received, offset, transfer_syntax_uid, whole_length)
            if known is None
            else known
        )
    except InstanceRejected:
        # Not pydicom's message: the reason travels in the event, and must quote no value.
        problems.append("data set cannot be parsed for its UIDs")
        sop_class = sop_instance = study = series = None
    for name, in_data_set, in_command in (
        ("SOP Class UID", sop_class, command_sop_class_uid),
        ("SOP Instance UID", sop_instance, command_sop_instance_uid),
    ):
        if in_command and in_data_set is not None and in_data_set != in_command:
            raise _mismatch(name, in_data_set, in_command)
    placement: list[str | None] = []
    for name, text in (("Study Instance UID", study), ("Series Instance UID", series)):
        valid = text is not None and is_valid_uid(text)
        placement.append(text if valid else None)
        if text is None:
            problems.append(f"no {name}")
        elif not valid:
            problems.append(invalid_uid(name, text))
    identity = InstanceIdentity(
        sop_class_uid=_uid(None, command_sop_class_uid or sop_class or "", "SOP Class UID"),
        sop_instance_uid=_uid(
            None, command_sop_instance_uid or sop_instance or "", "SOP Instance UID"
        ),
        study_instance_uid=placement[0],
        series_instance_uid=placement[1],
    )
    return identity, problems
