"""Part 10 framing without re-encoding: our file meta in front of the sender's data set bytes.

pynetdicom's chunked receive writes ``preamble + its own file meta + data set`` to a temporary
file. We keep that file untouched in the spool and, when the object is written to storage, put
*our* file meta (negotiated transfer syntax, the sender's AE title, our implementation UID) in
front of the data set bytes. The data set is never decoded and re-encoded, so it stays byte for
byte what arrived on the wire.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from dataclasses import dataclass
from enum import Enum
from io import RawIOBase
from typing import BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from contracts.keys import is_valid_uid
from gateway.dicom_status import Status
from gateway.errors import InstanceRejected

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

_PREAMBLE = b"\x00" * 128 + b"DICM"
# (0002,0000) UL, explicit VR little endian: tag, VR, 2-byte length, 4-byte value.
_GROUP_LENGTH_HEADER = struct.pack("<HH2sH", 0x0002, 0x0000, b"UL", 4)
#: Sequences nested deeper than this are refused. Each level costs a hostile sender only 16
#: bytes, and walking it (or pydicom reading it, recursively) costs memory and stack in
#: proportion; real data sets, structured reports included, stay far below it.
MAX_SEQUENCE_DEPTH = 64

_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
#: Explicit VRs whose length field is 4 bytes after 2 reserved ones (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_LAST_IDENTITY_TAG = Tag(0x0020, 0x000E)  # Series Instance UID: nothing after it is needed
_IDENTITY_TAGS = [
    Tag(0x0008, 0x0016),  # SOP Class UID
    Tag(0x0008, 0x0018),  # SOP Instance UID
    Tag(0x0020, 0x000D),  # Study Instance UID
    Tag(0x0020, 0x000E),  # Series Instance UID
]


@dataclass(frozen=True)
class InstanceIdentity:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


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


def file_meta_bytes(
    identity: InstanceIdentity,
    transfer_syntax_uid: str,
    source_ae_title: str,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """Preamble, ``DICM`` and the file meta group that precede the data set in the object."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(identity.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(identity.sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = UID(implementation_class_uid)
    meta.ImplementationVersionName = implementation_version_name
    meta.SourceApplicationEntityTitle = source_ae_title
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return _PREAMBLE + buffer.getvalue()


class _Inflating(RawIOBase):
    """A reader that inflates a deflated data set as it is read.

    Only as much as the identifying attributes need is ever inflated, and at most about two
    ``_WINDOW`` of it is held: skipping a large element inflates and drops it piece by piece.
    pydicom peeks a few bytes ahead and seeks back, so the last ``_WINDOW`` inflated bytes
    before the current position are kept for short backward seeks.
    """

    _WINDOW = 1024 * 1024
    _STEP = 256 * 1024

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._unconsumed = b""
        self._window = b""  # inflated bytes from offset ``_window_start``
        self._window_start = 0
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def _inflate_to(self, end: int, keep_from: int) -> None:
        """Inflate up to offset ``end``, keeping nothing before ``keep_from``."""
        while self._window_start + len(self._window) < end and not self._inflater.eof:
            source_ended = False
            if not self._unconsumed:
                self._unconsumed = self._source.read(65536)
                source_ended = not self._unconsumed
            inflated = self._inflater.decompress(self._unconsumed, self._STEP)
            self._unconsumed = self._inflater.unconsumed_tail
            # With all input taken, zlib may still hold output that the size limit kept back
            # (the end of a long run of zeros): only an empty answer then means the end.
            if source_ended and not inflated:
                break
            self._window += inflated
            self._trim(keep_from)
        self._trim(keep_from)

    def _trim(self, keep_from: int) -> None:
        excess = min(keep_from - self._window_start, len(self._window))
        if excess > 0:
            self._window = self._window[excess:]
            self._window_start += excess

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise OSError("unbounded reads of a deflated stream are not supported")
        self._inflate_to(self._position + size, keep_from=self._position - self._WINDOW)
        start = self._position - self._window_start
        data = self._window[start : start + size]
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self._position + offset
        if target < self._window_start:
            raise OSError("cannot seek that far back in a deflated stream")
        self._inflate_to(target, keep_from=target - self._WINDOW)
        self._position = min(target, self._window_start + len(self._window))
        return self._position


def _uid(data_set: Dataset, tag: BaseTag, fallback: str, name: str) -> str:
    """The UID's text as sent, without pydicom's value conversion (which warns on bad UIDs)."""
    text = fallback
    if tag in data_set:
        value = data_set.get_item(tag).value
        raw = value if isinstance(value, bytes) else str(value).encode("ascii", "replace")
        text = raw.decode("ascii", "replace").rstrip("\x00 ")
    if not is_valid_uid(text):
        raise InstanceRejected(Status.CANNOT_UNDERSTAND, f"{name} {text[:80]!r} is not a valid UID")
    return text


def read_identity(
    received: BinaryIO,
    offset: int,
    transfer_syntax_uid: str,
    command_sop_class_uid: str,
    command_sop_instance_uid: str,
) -> InstanceIdentity:
    """Read the four UIDs that place an instance, stopping before anything large.

    The SOP class and instance come from the data set and fall back to the C-STORE command's
    Affected SOP Class/Instance UID when the data set lacks them; when both have them, they must
    be the same (else *data set does not match SOP class*). An unknown transfer syntax is read
    as explicit VR little endian, which is what private syntaxes use in practice.
    """
    received.seek(offset)
    stream: BinaryIO = received
    if transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        stream = _Inflating(received)  # type: ignore[assignment]

    def past_identity(tag: BaseTag, _vr: str | None, _length: int) -> bool:
        return bool(tag > _LAST_IDENTITY_TAG)

    try:
        data_set = read_dataset(
            stream,
            is_implicit_VR=transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN,
            is_little_endian=transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN,
            stop_when=past_identity,
            defer_size=1024,
            specific_tags=list(_IDENTITY_TAGS),
        )
    except (InvalidDicomError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise InstanceRejected(
            Status.CANNOT_UNDERSTAND, f"data set cannot be parsed: {exc}"
        ) from exc
    sop_class, sop_instance, study, series = _IDENTITY_TAGS
    identity = InstanceIdentity(
        sop_class_uid=_uid(data_set, sop_class, command_sop_class_uid, "SOP Class UID"),
        sop_instance_uid=_uid(data_set, sop_instance, command_sop_instance_uid, "SOP Instance UID"),
        study_instance_uid=_uid(data_set, study, "", "Study Instance UID"),
        series_instance_uid=_uid(data_set, series, "", "Series Instance UID"),
    )
    # The sender's success is for the instance its command names. Filed under another UID it
    # is not the one the sender will ask for, and it could silently replace another instance
    # of the association (a UID received twice is stored once). dcmtk's storescp refuses it so.
    for name, in_data_set, in_command in (
        ("SOP Class UID", identity.sop_class_uid, command_sop_class_uid),
        ("SOP Instance UID", identity.sop_instance_uid, command_sop_instance_uid),
    ):
        if in_command and in_data_set != in_command:
            raise InstanceRejected(
                Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                f"{name} {in_data_set!r} in the data set is not the command's {in_command[:80]!r}",
            )
    return identity


class _Malformed(Exception):
    """The data set's encoding is broken; the message says where."""


class _Kind(Enum):
    DATA_SET = "a data set"
    ITEMS = "a sequence"
    FRAGMENTS = "pixel data fragments"


@dataclass(frozen=True)
class _Level:
    """A container open while walking: the data set, a sequence, an item, pixel fragments."""

    kind: _Kind
    #: Where a container of defined length ends; None for one that a delimiter ends (or the
    #: data set itself, which ends with the data).
    end: int | None
    #: The nearest end of this container or of any around it: nothing inside may cross it.
    limit: int | None
    implicit_vr: bool
    little_endian: bool
    #: Sequences open around and including this container.
    depth: int = 0


class _Cursor:
    """Reads element headers and skips values, keeping the offset in the data set."""

    def __init__(self, stream: BinaryIO, size: int | None) -> None:
        self._stream = stream
        self._base = stream.tell()
        #: The data set's length, when known without inflating it.
        self._size = size
        self.position = 0

    def read(self, count: int, level: _Level) -> bytes:
        """``count`` bytes of a header; fewer only where the data ends."""
        if level.limit is not None and self.position + count > level.limit:
            raise _Malformed(
                f"a header at offset {self.position} crosses the end of {level.kind.value}"
            )
        data = self._stream.read(count)
        self.position += len(data)
        return data

    def read_exactly(self, count: int, level: _Level) -> bytes:
        data = self.read(count, level)
        if len(data) < count:
            raise _Malformed(f"the data ends inside a header, in {level.kind.value}")
        return data

    def skip(self, count: int, level: _Level, tag: int, at: int) -> None:
        """Skip the value of the element (or fragment) ``tag`` whose header is at ``at``."""
        target = self.position + count
        if level.limit is not None and target > level.limit:
            raise _Malformed(
                f"{_where(tag, at)} runs {target - level.limit} bytes past its container"
            )
        if self._size is not None and target > self._size:
            raise _Malformed(
                f"{_where(tag, at)} is {target - self._size} bytes longer than the data"
            )
        self._stream.seek(self._base + target)
        if self._size is None and self._stream.tell() != self._base + target:
            raise _Malformed(f"{_where(tag, at)} is longer than the data")
        self.position = target


def _where(tag: int, at: int) -> str:
    """Names an element in a message (only made when there is something to say)."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) at offset {at}"


def check_well_formed(received: BinaryIO, offset: int, transfer_syntax_uid: str) -> None:
    """Refuse a data set whose encoding cannot be followed to its end.

    That is one cut short, with a length that runs past the data or past the item or
    sequence around it, a sequence or item that is never closed, an item or delimiter out of
    place, an undefined length where none is allowed, or sequences nested deeper than
    :data:`MAX_SEQUENCE_DEPTH`. Only headers are read, those of the items of sequences too (known
    by their VR, or in implicit VR by the data dictionary); other values are skipped unread
    (inflated and dropped, when deflated), so a large instance costs no more memory than a
    small one. Values, VRs and the order of tags are not judged, and odd lengths are
    accepted as dcmtk and pydicom read them: the bytes are stored as sent. Raises
    :class:`InstanceRejected` with *cannot understand*.
    """
    size = received.seek(0, os.SEEK_END) - offset
    received.seek(offset)
    if transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        # How long it is inflated is known only once inflated: skips are checked as they land.
        cursor = _Cursor(_Inflating(received), None)  # type: ignore[arg-type]
    else:
        cursor = _Cursor(received, size)
    try:
        _walk(
            cursor,
            implicit_vr=transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN,
            little_endian=transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN,
        )
    except (_Malformed, zlib.error) as exc:
        raise InstanceRejected(
            Status.CANNOT_UNDERSTAND, f"data set is not well-formed: {exc}"
        ) from exc


#: Header, 4-byte and 2-byte fields, by ``little_endian``: compiled once, as every element
#: of every instance goes through them.
_HEADER = {True: struct.Struct("<HH4s"), False: struct.Struct(">HH4s")}
_U32 = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_U16 = {True: struct.Struct("<H"), False: struct.Struct(">H")}


def _walk(cursor: _Cursor, *, implicit_vr: bool, little_endian: bool) -> None:
    levels = [_Level(_Kind.DATA_SET, None, None, implicit_vr, little_endian)]
    while True:
        level = levels[-1]
        if level.end is not None and cursor.position == level.end:
            levels.pop()  # a container of defined length is complete
            continue
        at = cursor.position
        header = cursor.read(8, level)
        if not header and len(levels) == 1:
            return
        if len(header) < 8:
            raise _Malformed(f"the data ends inside {level.kind.value}")
        group, element, rest = _HEADER[level.little_endian].unpack(header)
        tag = group << 16 | element
        nested: _Level | None
        if level.kind is _Kind.DATA_SET:
            if tag == _ITEM_DELIMITER and level.end is None and len(levels) > 1:
                levels.pop()  # the end of an item of undefined length
                continue
            if group == 0xFFFE:
                raise _Malformed(f"{_where(tag, at)}: an item or delimiter in a data set")
            nested = _element(cursor, level, rest, tag, at)
        else:
            (length,) = _U32[level.little_endian].unpack(rest)
            if tag == _SEQUENCE_DELIMITER and level.end is None:
                levels.pop()
                continue
            if tag != _ITEM:
                raise _Malformed(f"{_where(tag, at)}: not an item, in {level.kind.value}")
            if level.kind is _Kind.FRAGMENTS:
                if length == _UNDEFINED_LENGTH:
                    raise _Malformed(
                        f"{_where(tag, at)}: a pixel data fragment of undefined length"
                    )
                cursor.skip(length, level, tag, at)
                continue
            nested = _opened(_Kind.DATA_SET, cursor, level, length, tag, at)
        if nested is not None:
            if nested.depth > MAX_SEQUENCE_DEPTH:
                raise _Malformed(
                    f"{_where(tag, at)}: sequences nested deeper than {MAX_SEQUENCE_DEPTH}"
                )
            levels.append(nested)


def _element(cursor: _Cursor, level: _Level, rest: bytes, tag: int, at: int) -> _Level | None:
    """Skip one element of a data set, or open the container that it starts. ``rest`` is what
    follows the tag in the first 8 bytes of its header, which starts at ``at``."""
    vr: bytes | None = rest[:2]
    if level.implicit_vr or not (rest[:2].isalpha() and rest[:2].isupper()):
        # Where explicit VR has no VR, pydicom (which reads the identity) takes the element
        # for implicit VR, and so does this walk; the dictionary says which are sequences.
        vr = b"SQ" if _is_sequence(tag) else None
        (length,) = _U32[level.little_endian].unpack(rest)
    elif vr in _LONG_VRS:
        (length,) = _U32[level.little_endian].unpack(cursor.read_exactly(4, level))
    else:  # pydicom reads unknown VRs with a 2-byte length too
        (length,) = _U16[level.little_endian].unpack(rest[2:])
    if length != _UNDEFINED_LENGTH:
        if vr == b"SQ":  # its items are walked too, within its length
            return _opened(_Kind.ITEMS, cursor, level, length, tag, at)
        cursor.skip(length, level, tag, at)
        return None
    if vr == b"SQ" or (vr is None and tag != _PIXEL_DATA):
        return _opened(_Kind.ITEMS, cursor, level, length, tag, at)
    if vr == b"UN":
        # PS3.5 6.2.2: a UN of undefined length holds a sequence in implicit VR little endian.
        return _opened(_Kind.ITEMS, cursor, level, length, tag, at, implicit_little=True)
    if vr in (b"OB", b"OW") or vr is None:
        return _opened(_Kind.FRAGMENTS, cursor, level, length, tag, at)
    raise _Malformed(f"{_where(tag, at)}: undefined length with VR {vr.decode('ascii')}")


@functools.lru_cache(maxsize=4096)
def _is_sequence(tag: int) -> bool:
    """Whether the data dictionary gives ``tag`` the VR SQ (private tags: not known)."""
    if tag >> 16 & 1:  # private: the dictionary cannot know without the creator
        return False
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return False


def _opened(  # noqa: PLR0917 (the walk's state, passed on)
    kind: _Kind,
    cursor: _Cursor,
    level: _Level,
    length: int,
    tag: int,
    at: int,
    *,
    implicit_little: bool = False,
) -> _Level:
    """The container that the header of ``tag`` at ``at``, with ``length``, opens."""
    end = None
    limit = level.limit
    if length != _UNDEFINED_LENGTH:
        end = cursor.position + length
        if limit is not None and end > limit:
            raise _Malformed(f"{_where(tag, at)} runs {end - limit} bytes past its container")
        limit = end
    return _Level(
        kind,
        end,
        limit,
        implicit_vr=implicit_little or level.implicit_vr,
        little_endian=implicit_little or level.little_endian,
        depth=level.depth + (kind is _Kind.ITEMS),
    )
