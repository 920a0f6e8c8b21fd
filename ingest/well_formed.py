"""Following a received data set's encoding to its end, before its C-STORE is answered.

A data set cut short, or whose lengths lie, must not be answered with success; checked before
its identity is read (:func:`ingest.part10.read_identity`), it also means pydicom only ever
reads what is well-formed. See :func:`check_well_formed`.

The walk also reads the values of the identity's four UIDs on its way (:func:`walk`), where
pydicom would read them: top-level elements before the first tag past the Series Instance UID.
pydicom's read of them took 0.2-0.3 ms per instance, on the thread that answers the C-STORE.
Where the walk cannot be sure to read what pydicom reads (a value longer than pydicom reads
at once, an identity element with another VR than UI, an element of undefined length other
than a sequence before the identity's end), it says so and pydicom reads them.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from dataclasses import dataclass
from enum import Enum
from typing import BinaryIO

from pydicom.datadict import dictionary_VR

from gateway.dicom_status import Status
from gateway.errors import InstanceRejected
from ingest.inflating import Inflating
from ingest.part10 import (
    DEFLATED_TRANSFER_SYNTAXES,
    EXPLICIT_VR_BIG_ENDIAN,
    IDENTITY_TAGS,
    IMPLICIT_VR_LITTLE_ENDIAN,
    LARGEST_IDENTITY_VALUE,
    KnownUids,
    uid_text,
)

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
        #: Where the data set's first top-level element not yet walked to its end starts.
        self.whole = 0

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

    def value(self, count: int, level: _Level, tag: int, at: int) -> bytes:
        """Read the value of the element ``tag`` whose header is at ``at`` (checked as skipped)."""
        self._check_room(count, level, tag, at)
        data = self._stream.read(count)
        if len(data) < count:
            raise _Malformed(f"{_where(tag, at)} is longer than the data")
        self.position += count
        return data

    def _check_room(self, count: int, level: _Level, tag: int, at: int) -> None:
        target = self.position + count
        if level.limit is not None and target > level.limit:
            raise _Malformed(
                f"{_where(tag, at)} runs {target - level.limit} bytes past its container"
            )
        if self._size is not None and target > self._size:
            raise _Malformed(
                f"{_where(tag, at)} is {target - self._size} bytes longer than the data"
            )

    def skip(self, count: int, level: _Level, tag: int, at: int) -> None:
        """Skip the value of the element (or fragment) ``tag`` whose header is at ``at``."""
        self._check_room(count, level, tag, at)
        target = self.position + count
        self._stream.seek(self._base + target)
        if self._size is None and self._stream.tell() != self._base + target:
            raise _Malformed(f"{_where(tag, at)} is longer than the data")
        self.position = target


def _where(tag: int, at: int) -> str:
    """Names an element in a message (only made when there is something to say)."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) at offset {at}"


@dataclass(frozen=True)
class Malformation:
    """Why a data set's encoding cannot be followed to its end."""

    #: Where the walk stopped and why, by tags and offsets (never a value).
    reason: str
    #: Length of the data set's leading top-level elements that were walked to their end
    #: before it: well-formed, so the identity may be read from them (in the inflated data,
    #: for a deflated transfer syntax).
    whole_length: int


def check_well_formed(received: BinaryIO, offset: int, transfer_syntax_uid: str) -> None:
    """Refuse a data set whose encoding cannot be followed to its end (see :func:`walk`).
    Raises :class:`InstanceRejected` with *cannot understand*."""
    walk(received, offset, transfer_syntax_uid).check()


class _Identity:
    """The identity's values met on a walk, and whether pydicom would read the same."""

    def __init__(self) -> None:
        self.values: dict[int, bytes] = {}
        #: Past the last identity tag at the top level: pydicom stops reading there.
        self.done = False
        #: Something the walk cannot read as pydicom would.
        self.unsure = False

    def met(self, tag: int) -> bool:
        """Whether the top-level element ``tag`` is one to read."""
        if tag > IDENTITY_TAGS[-1]:
            self.done = True
        return not self.done and tag in IDENTITY_TAGS

    def known(self) -> KnownUids:
        if self.unsure:
            return None
        values = self.values
        return [None if tag not in values else uid_text(values[tag]) for tag in IDENTITY_TAGS]


@dataclass(frozen=True)
class Walk:
    """What a walk of a data set found."""

    #: Why its encoding cannot be followed to its end; None: nothing.
    malformation: Malformation | None
    #: The identity's UIDs, read where pydicom reads them (ingest.part10.KnownUids).
    known: KnownUids

    def check(self) -> None:
        """Raise :class:`InstanceRejected` (*cannot understand*) if it is not well-formed."""
        if self.malformation is not None:
            raise InstanceRejected(Status.CANNOT_UNDERSTAND, self.malformation.reason)


def walk(received: BinaryIO, offset: int, transfer_syntax_uid: str) -> Walk:
    """Follow a data set's encoding to its end, reading the identity's values on the way.

    What keeps it from being followed to its end is a data set cut short, with a length that
    runs past the data or past the item or sequence around it, a sequence or item that is
    never closed, an item or delimiter out of place, an undefined length where none is
    allowed, or sequences nested deeper than :data:`MAX_SEQUENCE_DEPTH`. Only headers are read,
    those of the items of sequences too (known by their VR, or in implicit VR by the data
    dictionary), and the identity's few values; other values are skipped unread (inflated and
    dropped, when deflated), so a large instance costs no more memory than a small one.
    Values, VRs and the order of tags are not judged, and odd lengths are
    accepted as dcmtk and pydicom read them: the bytes are stored as sent.
    """
    size = received.seek(0, os.SEEK_END) - offset
    received.seek(offset)
    if transfer_syntax_uid in DEFLATED_TRANSFER_SYNTAXES:
        # How long it is inflated is known only once inflated: skips are checked as they land.
        cursor = _Cursor(Inflating(received), None)  # type: ignore[arg-type]
    else:
        cursor = _Cursor(received, size)
    identity = _Identity()
    try:
        _walk(
            cursor,
            identity,
            implicit_vr=transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN,
            little_endian=transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN,
        )
    except (_Malformed, zlib.error) as exc:
        # The values read come from top-level elements walked whole, before cursor.whole:
        # those that pydicom is given then.
        malformation = Malformation(f"data set is not well-formed: {exc}", cursor.whole)
        return Walk(malformation, identity.known())
    return Walk(None, identity.known())


#: Header, 4-byte and 2-byte fields, by ``little_endian``: compiled once, as every element
#: of every instance goes through them.
_HEADER = {True: struct.Struct("<HH4s"), False: struct.Struct(">HH4s")}
_U32 = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_U16 = {True: struct.Struct("<H"), False: struct.Struct(">H")}


def _walk(cursor: _Cursor, identity: _Identity, *, implicit_vr: bool, little_endian: bool) -> None:
    levels = [_Level(_Kind.DATA_SET, None, None, implicit_vr, little_endian)]
    while True:
        level = levels[-1]
        if level.end is not None and cursor.position == level.end:
            levels.pop()  # a container of defined length is complete
            continue
        at = cursor.position
        if len(levels) == 1:
            cursor.whole = at  # every top-level element before this one is whole
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
            # Before the identity's last tag, a top-level element is watched (and read, if
            # it is one of the identity's): pydicom reads the identity from those. The first
            # element past it (pixel data, say) is not: pydicom stops before it.
            keep = len(levels) == 1 and not identity.done and identity.met(tag)
            watch = identity if len(levels) == 1 and not identity.done else None
            nested = _element(cursor, level, rest, tag, at, watch, keep=keep)
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


def _element(  # noqa: PLR0917 (the walk's state, passed on)
    cursor: _Cursor,
    level: _Level,
    rest: bytes,
    tag: int,
    at: int,
    watch: _Identity | None,
    *,
    keep: bool,
) -> _Level | None:
    """Skip one element of a data set, or open the container that it starts; ``keep``: read
    its value into ``watch`` instead. ``rest`` is what follows the tag in the first 8 bytes of
    its header, which starts at ``at``."""
    vr: bytes | None = rest[:2]
    if level.implicit_vr or not (b"AA" <= rest[:2] <= b"ZZ"):
        # Where explicit VR has no VR (pydicom's test: not between "AA" and "ZZ"), pydicom
        # takes the element for implicit VR, and so does this walk; the dictionary says which
        # are sequences.
        vr = b"SQ" if _is_sequence(tag) else None
        (length,) = _U32[level.little_endian].unpack(rest)
    elif vr in _LONG_VRS:
        (length,) = _U32[level.little_endian].unpack(cursor.read_exactly(4, level))
    else:  # pydicom reads unknown VRs with a 2-byte length too
        (length,) = _U16[level.little_endian].unpack(rest[2:])
    if watch is not None and length == _UNDEFINED_LENGTH and vr != b"SQ":
        # pydicom reads such an element its own way (it may scan for a delimiter), and may
        # find other top-level elements after it than this walk does: it reads the identity.
        watch.unsure = True
    elif keep and watch is not None:
        if vr not in (None, b"UI") or length > LARGEST_IDENTITY_VALUE:
            watch.unsure = True  # pydicom might give no plain text: left to it
        else:
            watch.values[tag] = cursor.value(length, level, tag, at)
            return None
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
