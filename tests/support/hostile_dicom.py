"""Hostile input for the DICOM port, as hypothesis strategies: PDU-shaped garbage and broken
association requests (:func:`hostile`), and malformed data sets inside a good association,
each with the answer the gateway must give (:func:`hostile_store`)."""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

from hypothesis import assume
from hypothesis import strategies as st

from gateway.dicom_status import VERIFICATION_SOP_CLASS, Status
from ingest.well_formed import MAX_SEQUENCE_DEPTH
from tests.support.factories import (
    CT_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    EncodedDataSet,
)
from tests.support.factories.raw import (
    ITEM,
    ITEM_DELIMITER,
    SEQUENCE_DELIMITER,
    UNDEFINED_LENGTH,
    nested_sequences,
    replaced,
    uid_element,
)
from tests.support.raw_scu import association_request


@st.composite
def pdu(draw: st.DrawFn) -> bytes:
    """One PDU-shaped thing: a known or unknown type, a body, a length that may lie."""
    pdu_type = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7]) | st.integers(0, 255))
    body = draw(st.binary(max_size=300))
    length = draw(st.just(len(body)) | st.integers(0, 2**32 - 1))
    return struct.pack(">BBI", pdu_type, 0, length) + body


def request(port: int) -> bytes:
    return association_request(
        "GATEWAY", "FUZZER", [VERIFICATION_SOP_CLASS, CT_IMAGE_STORAGE], port
    )


def hostile(port: int) -> st.SearchStrategy[bytes]:
    valid = request(port)
    pdus = st.lists(pdu(), min_size=1, max_size=4).map(b"".join)
    titles = st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
    return st.one_of(
        pdus,  # wrong order, unknown types, lying lengths, before any association
        pdus.map(lambda tail: valid + tail),  # garbage after a good request
        st.integers(1, len(valid) - 1).map(lambda cut: valid[:cut]),  # a truncated request
        st.integers(6, len(valid) - 1).map(  # a request whose inner lengths no longer fit
            lambda at: valid[:at] + bytes([valid[at] ^ 0xFF]) + valid[at + 1 :]
        ),
        titles.map(  # any bytes as AE titles: non-ASCII, NUL, backslash
            lambda t: valid[:10] + t[0] + t[1] + valid[42:]
        ),
    )


SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
REFERENCED_IMAGE_SEQUENCE = 0x00081140
PRIVATE_UN = 0x00091001
SERIES_INSTANCE_UID = 0x0020000E
PIXEL_DATA = 0x7FE00010
#: The largest length that is not "undefined".
HUGE_LENGTH = 0xFFFFFFFE
#: An item of undefined length, and the item and sequence delimitation items, as implicit VR
#: little endian writes them (PS3.5 7.5).


@dataclass(frozen=True)
class HostileStore:
    """One generated C-STORE: what is sent, and what the gateway must answer."""

    kind: str
    #: The command's Affected SOP Instance UID.
    command_uid: str
    encoded: bytes
    status: Status
    #: The SOP Instance UID it is stored and announced under, when it is accepted.
    stored_as: str | None = None


def _length_of(element: bytes) -> int:
    return int(struct.unpack_from("<I", element, 4)[0])


def _with_length(encoded: bytes, at: int, length: int) -> bytes:
    """``encoded`` with the length field of the element header at ``at`` replaced."""
    return encoded[: at + 4] + struct.pack("<I", length) + encoded[at + 8 :]


#: What is wrong with a generated data set; every example sends one of each, in any order.
KINDS = (
    "truncated",
    "length past the end",
    "pixel data length short",
    "undefined length without delimiters",
    "garbage",
    "garbage after the data set",
    "sequence never closed",
    "nested sequences",
    "SOP Instance UID not the command's",
    "SOP Class UID not the command's",
    "SOP Instance or Class UID missing",
)


@st.composite
def hostile_store(draw: st.DrawFn, base: EncodedDataSet, other_uid: str, kind: str) -> HostileStore:
    """A data set of ``kind`` made from ``base``, and the answer it must get.

    The PDV framing is always right (the PDU-level cases are :func:`hostile`'s), so every one
    of them gets an answer on the same association; none makes pynetdicom abort it.
    """
    uid = base.uids.sop_instance
    encoded = base.encoded
    refused = Status.CANNOT_UNDERSTAND
    if kind == "truncated":
        # Cut at any byte, or right after an element: the rest is then a well-formed data set,
        # accepted when it still holds the identifying UIDs.
        ends = list(itertools.accumulate(len(element) for _, element in base.elements))
        cut = draw(st.integers(1, len(encoded) - 1) | st.sampled_from(ends[:-1]))
        series_end = ends[[tag for tag, _ in base.elements].index(SERIES_INSTANCE_UID)]
        if cut in ends and cut >= series_end:
            return HostileStore(kind, uid, encoded[:cut], Status.SUCCESS, uid)
        return HostileStore(kind, uid, encoded[:cut], refused)
    if kind == "length past the end":
        # Any element's length, made to run past the end of the data: by a little, to the
        # largest length there is, odd or even.
        tag, _ = draw(st.sampled_from(base.elements))
        at = base.offset(tag)
        following = len(encoded) - (at + 8)
        length = draw(
            st.integers(following + 1, following + 9)
            | st.integers(following + 1, HUGE_LENGTH)
            | st.just(HUGE_LENGTH)
        )
        if draw(st.booleans()) and length % 2 == 0:
            length = length + 1 if length < HUGE_LENGTH else length - 1
        return HostileStore(kind, uid, _with_length(encoded, at, length), refused)
    if kind == "pixel data length short":
        # The last element ends 1 to 7 bytes early (an odd length for odd counts): what follows
        # is too short to be an element header.
        at = base.offset(PIXEL_DATA)
        short = draw(st.integers(1, 7))
        length = _length_of(encoded[at:]) - short
        return HostileStore(kind, uid, _with_length(encoded, at, length), refused)
    if kind == "undefined length without delimiters":
        tag, _ = draw(
            st.sampled_from([e for e in base.elements if _length_of(e[1]) != UNDEFINED_LENGTH])
        )
        at = base.offset(tag)
        # Taken for a sequence (or pixel fragments), its value must start with an item or a
        # delimiter: the bytes there are none (checked, so that the expected answer is certain).
        assume(encoded[at + 8 : at + 10] != ITEM[:2])
        return HostileStore(kind, uid, _with_length(encoded, at, UNDEFINED_LENGTH), refused)
    if kind == "garbage":
        # No well-formed data set with valid Study and Series Instance UIDs comes of chance.
        return HostileStore(kind, uid, draw(st.binary(min_size=1, max_size=512)), refused)
    if kind == "garbage after the data set":
        tail = draw(st.binary(min_size=1, max_size=7))  # shorter than an element header
        return HostileStore(kind, uid, encoded + tail, refused)
    if kind == "sequence never closed":
        sequence = dict(base.elements)[REFERENCED_IMAGE_SEQUENCE]
        assert sequence.endswith(ITEM_DELIMITER + SEQUENCE_DELIMITER)
        variant = draw(
            st.sampled_from(
                [
                    sequence[:-8],  # no sequence delimiter
                    sequence[:-16] + sequence[-8:],  # no item delimiter
                    sequence[:-16],  # neither: the rest of the data set is inside the item
                ]
            )
        )
        return HostileStore(
            kind, uid, replaced(base, {REFERENCED_IMAGE_SEQUENCE: variant}), refused
        )
    if kind == "nested sequences":
        depth = draw(
            st.integers(1, 5 * MAX_SEQUENCE_DEPTH)
            | st.sampled_from([MAX_SEQUENCE_DEPTH, MAX_SEQUENCE_DEPTH + 1])
        )
        # In the private group before the Study Instance UID, where pydicom reads it too.
        private = dict(base.elements)[PRIVATE_UN] + nested_sequences(depth)
        nested = replaced(base, {PRIVATE_UN: private})
        if depth <= MAX_SEQUENCE_DEPTH:
            return HostileStore(kind, uid, nested, Status.SUCCESS, uid)
        return HostileStore(kind, uid, nested, refused)
    mismatch = Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    if kind == "SOP Instance UID not the command's":
        return HostileStore(kind, other_uid, encoded, mismatch)
    if kind == "SOP Class UID not the command's":
        other_class = uid_element(SOP_CLASS_UID, SECONDARY_CAPTURE_IMAGE_STORAGE)
        return HostileStore(kind, uid, replaced(base, {SOP_CLASS_UID: other_class}), mismatch)
    # The data set lacks one of them: the command's is taken (docs/conformance.md).
    missing = draw(st.sampled_from([SOP_INSTANCE_UID, SOP_CLASS_UID]))
    return HostileStore(kind, uid, replaced(base, {missing: None}), Status.SUCCESS, uid)
