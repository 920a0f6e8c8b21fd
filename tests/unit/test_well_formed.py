"""A received data set's encoding is followed to its end: headers only, values skipped."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from gateway.dicom_status import Status
from gateway.errors import InstanceRejected
from ingest.well_formed import MAX_SEQUENCE_DEPTH, check_well_formed

UNDEFINED = 0xFFFFFFFF
ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
#: Bytes before the data set, as pynetdicom's file meta would be: offsets must be honoured.
BEFORE = b"not the data set" * 3


def implicit(tag: int, value: bytes = b"", length: int | None = None) -> bytes:
    """An implicit VR little endian element; ``length`` may lie about ``value``."""
    header = struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value) if length is None else length)
    return header + value


def explicit(tag: int, vr: bytes, value: bytes = b"", length: int | None = None) -> bytes:
    """An explicit VR little endian element, with the length field its VR has."""
    size = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, vr, size) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, size) + value


def item(content: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content) if length is None else length) + content


def nested(depth: int) -> bytes:
    """``depth`` sequences inside each other, of undefined length, each with one item."""
    if depth == 0:
        return implicit(0x00091003, b"ab")
    inner = item(nested(depth - 1) + ITEM_END, UNDEFINED)
    return implicit(0x00091002, inner + SEQUENCE_END, UNDEFINED)


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


NAME = implicit(0x00100010, b"Test^Patient")
UID = implicit(0x0020000D, b"1.2.3.4\x00")
SEQUENCE = implicit(0x00081140, item(UID + ITEM_END, UNDEFINED) + SEQUENCE_END, UNDEFINED)
ENCAPSULATED = explicit(0x7FE00010, b"OB", item() + item(b"fragment") + SEQUENCE_END, UNDEFINED)
IMPLICIT, EXPLICIT, BIG = ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian


@pytest.mark.parametrize(
    ("data", "transfer_syntax"),
    [
        pytest.param(b"", IMPLICIT, id="empty"),
        pytest.param(NAME + UID, IMPLICIT, id="elements"),
        pytest.param(implicit(0x00100010, b"odd"), IMPLICIT, id="an odd length that fits"),
        pytest.param(NAME + SEQUENCE + UID, IMPLICIT, id="undefined sequence and item"),
        pytest.param(
            implicit(0x00081140, item(UID) + item(NAME + UID)) + UID,
            IMPLICIT,
            id="defined sequence and items",
        ),
        pytest.param(
            implicit(0x00081140, item(UID + ITEM_END, UNDEFINED)),
            IMPLICIT,
            id="undefined item in a defined sequence",
        ),
        pytest.param(
            implicit(0x00081140, item(UID) + SEQUENCE_END, UNDEFINED),
            IMPLICIT,
            id="defined item in an undefined sequence",
        ),
        pytest.param(implicit(0x00081140, SEQUENCE_END, UNDEFINED), IMPLICIT, id="empty sequence"),
        pytest.param(
            implicit(0x7FE00010, item(b"frag") + SEQUENCE_END, UNDEFINED),
            IMPLICIT,
            id="fragments in implicit VR",
        ),
        pytest.param(nested(MAX_SEQUENCE_DEPTH), IMPLICIT, id="nested up to the limit"),
        pytest.param(
            explicit(0x00081140, b"SQ", item(explicit(0x0020000D, b"UI", b"1.2\x00")))
            + explicit(0x00091010, b"UN", item(UID + ITEM_END, UNDEFINED) + SEQUENCE_END, UNDEFINED)
            + explicit(0x00091011, b"XX", b"unknown VR")
            + implicit(0x00091012, b"no VR at all")
            + ENCAPSULATED,
            EXPLICIT,
            id="explicit VR: sequence, UN holding implicit VR, unknown VR, pixel fragments",
        ),
        pytest.param(
            struct.pack(">HH2sH", 0x0010, 0x0010, b"PN", 4)
            + b"A^B "
            + struct.pack(">HH2s2xI", 0x0008, 0x1140, b"SQ", UNDEFINED)
            + struct.pack(">HHI", 0xFFFE, 0xE000, 0)
            + struct.pack(">HHI", 0xFFFE, 0xE0DD, 0),
            BIG,
            id="big endian",
        ),
        pytest.param(
            deflate(explicit(0x00100010, b"PN", b"A^B ") + ENCAPSULATED), None, id="deflated"
        ),
    ],
)
def test_well_formed_data_sets_pass(data: bytes, transfer_syntax: str | None) -> None:
    syntax = transfer_syntax or DeflatedExplicitVRLittleEndian
    check_well_formed(io.BytesIO(BEFORE + data), len(BEFORE), syntax)


@pytest.mark.parametrize(
    ("data", "transfer_syntax", "message"),
    [
        pytest.param(NAME[:3], IMPLICIT, "ends inside", id="cut in a header"),
        pytest.param(NAME + UID[:-1], IMPLICIT, "longer than the data", id="cut in a value"),
        pytest.param(NAME + b"\x00" * 5, IMPLICIT, "ends inside", id="bytes after the last"),
        pytest.param(
            implicit(0x00100010, b"Test", 0xFFFFFFFE) + UID,
            IMPLICIT,
            "longer than the data",
            id="huge length",
        ),
        pytest.param(
            implicit(0x00100010, b"Test^Patient", UNDEFINED) + UID,
            IMPLICIT,
            "not an item",
            id="undefined length of a value",
        ),
        pytest.param(
            explicit(0x00100010, b"UT", b"text", UNDEFINED) + SEQUENCE_END,
            EXPLICIT,
            "undefined length with VR UT",
            id="undefined length with a VR that cannot have it",
        ),
        pytest.param(SEQUENCE[:-8], IMPLICIT, "ends inside a sequence", id="sequence not closed"),
        pytest.param(
            SEQUENCE[:-16] + SEQUENCE[-8:],
            IMPLICIT,
            "an item or delimiter in a data set",
            id="item not closed",
        ),
        pytest.param(
            SEQUENCE[:-16] + NAME, IMPLICIT, "ends inside a data set", id="neither closed"
        ),
        pytest.param(
            NAME + ITEM_END + UID, IMPLICIT, "an item or delimiter in a data set", id="stray"
        ),
        pytest.param(
            implicit(0x00081140, item(UID + NAME, len(UID) + len(NAME) + 4)),
            IMPLICIT,
            "past its container",
            id="item longer than its sequence",
        ),
        pytest.param(
            implicit(0x00081140, item(UID + NAME, len(UID) + 2)),
            IMPLICIT,
            "crosses the end of a data set",
            id="header across the end of its item",
        ),
        pytest.param(
            implicit(0x00081140, item(UID + NAME, len(UID) + len(NAME) - 2)),
            IMPLICIT,
            "runs 2 bytes past its container",
            id="element longer than its item",
        ),
        pytest.param(
            implicit(0x00081140, item(UID) + SEQUENCE_END),
            IMPLICIT,
            "not an item",
            id="delimiter in a defined sequence",
        ),
        pytest.param(
            explicit(0x7FE00010, b"OB", item(b"frag", UNDEFINED) + SEQUENCE_END, UNDEFINED),
            EXPLICIT,
            "fragment of undefined length",
            id="fragment of undefined length",
        ),
        pytest.param(
            explicit(0x7FE00010, b"OB", item(b"frag", 100) + SEQUENCE_END, UNDEFINED),
            EXPLICIT,
            "longer than the data",
            id="fragment longer than the data",
        ),
        pytest.param(
            explicit(0x7FE00010, b"OB", item(b"frag"), UNDEFINED),
            EXPLICIT,
            "ends inside pixel data fragments",
            id="fragments not closed",
        ),
        pytest.param(
            explicit(0x7FE00010, b"OB", b"x", UNDEFINED)[:10],
            EXPLICIT,
            "ends inside a header",
            id="cut in a long header",
        ),
        pytest.param(nested(MAX_SEQUENCE_DEPTH + 1), IMPLICIT, "nested deeper", id="too deep"),
        pytest.param(
            deflate(explicit(0x00100010, b"PN", b"A^B ") + ENCAPSULATED)[:-6],
            None,
            "not well-formed",
            id="deflated, cut short",
        ),
        pytest.param(b"\xff" * 7, None, "not well-formed", id="not deflated at all"),
    ],
)
def test_broken_data_sets_are_refused_as_cannot_understand(
    data: bytes, transfer_syntax: str | None, message: str
) -> None:
    syntax = transfer_syntax or DeflatedExplicitVRLittleEndian
    with pytest.raises(InstanceRejected, match=message) as caught:
        check_well_formed(io.BytesIO(BEFORE + data), len(BEFORE), syntax)
    assert caught.value.status == Status.CANNOT_UNDERSTAND


def test_a_large_deflated_value_is_walked_past_in_bounded_memory() -> None:
    """64 MiB of zeros deflate to 64 KiB; checking the data set must not inflate them at once.

    Regression, too: with the zeros last, zlib still held output back when all its input was
    taken, and inflating stopped there, so the value seemed to run past the end of the data.
    """
    data = deflate(explicit(0x00191010, b"OB", bytes(64 * 1024 * 1024)))
    assert len(data) < 1024 * 1024
    tracemalloc.start()
    try:
        check_well_formed(io.BytesIO(data), 0, DeflatedExplicitVRLittleEndian)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while walking past 64 MiB"
