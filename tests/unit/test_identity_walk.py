"""The identity the well-formedness walk reads is the one pydicom reads from the same bytes, or
the walk leaves it to pydicom."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from gateway.errors import InstanceRejected
from ingest.part10 import _read_uids, data_set_offset
from ingest.well_formed import walk
from tests.support.factories import NATIVE_TRANSFER_SYNTAXES, ct_series
from tests.support.factories.images import compressed_instance
from tests.support.factories.quirky import quirks
from tests.unit.test_well_formed import (
    ITEM_END,
    SEQUENCE_END,
    deflate,
    explicit,
    implicit,
    item,
    nested,
)

CLASS = implicit(0x00080016, b"1.2.840.10008.5.1.4.1.1.7\x00")
INSTANCE = implicit(0x00080018, b"1.2.3.4.5 ")
STUDY = implicit(0x0020000D, b"1.2.3.4\x00")
SERIES = implicit(0x0020000E, b"1.2.3.5\x00")
LATER = implicit(0x00200013, b"7 ")
UNDEFINED = 0xFFFFFFFF


def _pydicoms(data: bytes, syntax: str) -> list[str | None] | str:
    """What receive's pydicom read gives: the UIDs, or why it could not read them."""
    walked = walk(io.BytesIO(data), 0, syntax)
    whole = None if walked.malformation is None else walked.malformation.whole_length
    try:
        return _read_uids(io.BytesIO(data), 0, syntax, whole)
    except InstanceRejected as exc:
        return str(exc)


def _same_or_left_to_pydicom(data: bytes, syntax: str) -> bool:
    """True when the walk read the UIDs (and they are pydicom's); False when it left them."""
    known = walk(io.BytesIO(data), 0, syntax).known
    if known is None:
        return False
    assert known == _pydicoms(data, syntax)
    return True


@pytest.mark.parametrize(
    ("data", "syntax", "read_here"),
    [
        pytest.param(
            CLASS + INSTANCE + STUDY + SERIES + LATER, ImplicitVRLittleEndian, True, id="all"
        ),
        pytest.param(b"", ImplicitVRLittleEndian, True, id="empty"),
        pytest.param(CLASS + STUDY, ImplicitVRLittleEndian, True, id="some missing"),
        pytest.param(
            SERIES + CLASS + LATER + STUDY, ImplicitVRLittleEndian, True, id="out of order"
        ),
        pytest.param(
            CLASS + STUDY + STUDY[:8] + b"9.9\x00", ImplicitVRLittleEndian, True, id="twice"
        ),
        pytest.param(
            implicit(0x00081140, item(STUDY)) + CLASS + SERIES,
            ImplicitVRLittleEndian,
            True,
            id="a UID inside a sequence is not the data set's",
        ),
        pytest.param(
            explicit(0x00080016, b"UI", b"1.2\x00")
            + explicit(0x00091010, b"XX", b"1.3\x00")  # no VR pydicom knows: still 2-byte length
            + struct.pack("<HHI", 0x0020, 0x000D, 4)  # no VR at all: implicit
            + b"1.4\x00",
            ExplicitVRLittleEndian,
            True,
            id="explicit VR, odd VRs",
        ),
        pytest.param(
            struct.pack(">HH2sH", 0x0008, 0x0016, b"UI", 4) + b"1.2\x00",
            ExplicitVRBigEndian,
            True,
            id="big endian",
        ),
        pytest.param(
            deflate(
                explicit(0x00080016, b"UI", b"1.2\x00") + explicit(0x0020000E, b"UI", b"1.5\x00")
            ),
            DeflatedExplicitVRLittleEndian,
            True,
            id="deflated",
        ),
        pytest.param(
            CLASS + implicit(0x00080018, b"1" * 1026),
            ImplicitVRLittleEndian,
            False,
            id="longer than pydicom reads",
        ),
        pytest.param(
            CLASS
            + implicit(
                0x0020000D, item(SERIES) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0), UNDEFINED
            ),
            ImplicitVRLittleEndian,
            False,
            id="a UID element of undefined length",
        ),
        pytest.param(
            CLASS
            + implicit(
                0x00100010,  # a name, of undefined length, holding what looks like items
                item(
                    implicit(0x00091002, item() + SEQUENCE_END, UNDEFINED) + STUDY + ITEM_END,
                    UNDEFINED,
                )
                + SEQUENCE_END,
                UNDEFINED,
            )
            + SERIES,
            ImplicitVRLittleEndian,
            False,
            id="an element of undefined length that is no sequence",
        ),
        pytest.param(
            explicit(0x00080016, b"UI", b"1.2\x00")
            + struct.pack("<HH2sH", 0x0009, 0x0010, b"B\x00", 0)  # pydicom: explicit, length 0
            + explicit(0x0020000D, b"UI", b"6.6\x00"),
            ExplicitVRLittleEndian,
            True,
            id="a VR that is no letters but between AA and ZZ",
        ),
        pytest.param(
            explicit(0x00080016, b"UI", b"1.2\x00") + explicit(0x0020000D, b"US", b""),
            ExplicitVRLittleEndian,
            False,
            id="a UID element with another VR",
        ),
        pytest.param(
            explicit(0x00080016, b"UI", b"1.2\x00") + explicit(0x0020000D, b"XX", b""),
            ExplicitVRLittleEndian,
            False,
            id="a UID element with a VR pydicom does not know",
        ),
        pytest.param(
            CLASS + STUDY + SERIES + LATER + nested(70),
            ImplicitVRLittleEndian,
            True,
            id="malformed after",
        ),
        pytest.param(
            CLASS + STUDY + SERIES + implicit(0x7FE00010, item(b"frag") + SEQUENCE_END, UNDEFINED),
            ImplicitVRLittleEndian,
            True,
            id="encapsulated pixel data right after the identity's end",
        ),
        pytest.param(
            CLASS + nested(70) + STUDY,
            ImplicitVRLittleEndian,
            False,
            id="a private sequence of undefined length before the identity's end",
        ),
        pytest.param(CLASS + STUDY + SERIES[:-2], ImplicitVRLittleEndian, True, id="cut in a UID"),
    ],
)
def test_crafted_data_sets(data: bytes, syntax: str, read_here: bool) -> None:
    assert _same_or_left_to_pydicom(data, syntax) is read_here


def test_every_quirk_reads_as_pydicom_reads_it() -> None:
    left = [
        quirk.name
        for quirk in quirks(0)
        if not _same_or_left_to_pydicom(quirk.encoded, quirk.uids.transfer_syntax)
    ]
    # A SOP Class UID 2 GiB long (pydicom would not read it whole), and a private sequence of
    # undefined length before the Series Instance UID (pydicom reads it its own way).
    assert left == ["sequences nested too deep", "garbage"]


@pytest.mark.parametrize("syntax", sorted(NATIVE_TRANSFER_SYNTAXES))
def test_the_factories_instances_read_as_pydicom_reads_them(tmp_path: Path, syntax: str) -> None:
    paths = [instance.path for instance in ct_series(tmp_path, 2, transfer_syntax=syntax)]
    paths.append(compressed_instance(tmp_path / "jpeg", "1.2.840.10008.1.2.4.50").path)
    for path in paths:
        raw = path.read_bytes()
        data = raw[data_set_offset(io.BytesIO(raw)) :]
        meta_syntax = syntax if path.parent == tmp_path else "1.2.840.10008.1.2.4.50"
        assert _same_or_left_to_pydicom(data, meta_syntax)


def test_what_pydicom_cannot_read_is_this_data_sets_problem() -> None:
    """pydicom raises NotImplementedError for a VR it does not know: refused, not a crash."""
    data = explicit(0x00080016, b"UI", b"1.2\x00") + explicit(0x0020000D, b"XX", b"")
    assert _pydicoms(data, ExplicitVRLittleEndian) == (
        "data set cannot be parsed: Unknown Value Representation 'XX' in tag (0020,000D)"
    )
