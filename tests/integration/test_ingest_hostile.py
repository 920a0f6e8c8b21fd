"""Hostile peers on the SCP port: generated malformed PDUs and association requests, and peers
that go silent. Each ends that connection only; the service goes on, announces nothing for
it, and gives its association's place back. Generated malformed data sets inside a good
association fail that C-STORE only."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import socket
import sqlite3
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.dicom_status import VERIFICATION_SOP_CLASS, Status
from ingest.part10 import MAX_SEQUENCE_DEPTH
from tests.integration.conftest import EMBEDDED, RABBITMQ_S3, Ingest, released
from tests.support import dcmtk
from tests.support.factories import (
    CT_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    EncodedDataSet,
    ct_series,
    derived_uid,
    file_meta_length,
    small_data_set,
)
from tests.support.gateway import GatewayProcess
from tests.support.net import wait_until
from tests.support.raw_scu import DataSet, RawAssociation, association_request
from tests.support.settled import wait_until_handed_on

#: Short, so that silent peers are seen to be dropped within the test.
NETWORK_TIMEOUT_SECONDS = 2.0
#: How long the service may take to end a connection whose peer has sent everything.
END_SECONDS = 15.0
#: In an A-ASSOCIATE-RQ: the called and the calling AE title (PS3.8 9.3.2).
_CALLED, _CALLING = slice(10, 26), slice(26, 42)


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


def exchange(gateway: GatewayProcess, data: bytes) -> None:
    """Send ``data``, close our side, and wait for the service to end the connection."""
    with socket.create_connection((gateway.host, gateway.port), timeout=END_SECONDS) as sock:
        with contextlib.suppress(ConnectionError):  # it may have aborted already
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):  # an abort may come as a reset
            while sock.recv(65536):
                pass


def open_associations(ingest: Ingest) -> int:
    journal = ingest.workdir / "spool" / "journal.sqlite3"
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5) as db:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM associations WHERE state IN ('open', 'releasing')"
        ).fetchone()
    return int(count)


@pytest.mark.backends(EMBEDDED)
def test_generated_malformed_input_ends_only_that_connection(ingest: Ingest) -> None:
    gateway = ingest.start(max_associations=2, network_timeout_seconds=NETWORK_TIMEOUT_SECONDS)

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=hostile(gateway.port))
    def survives(data: bytes) -> None:
        exchange(gateway, data)  # fails with a timeout if the service keeps the connection
        assert gateway.is_running()

    with ingest.events() as events:
        survives()
        # Every place is given back: with max_associations = 2, two associations and a
        # C-ECHO must all be accepted again.
        wait_until(lambda: open_associations(ingest) == 0, 10, "every place is free")
        assert dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY").ok
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    assert ingest.spool_files() == []
    assert ingest.objects() == {}
    # pynetdicom logs each undecodable PDU with its traceback; our own code logs no error,
    # and no thread died of an exception.
    log = gateway.log_text()
    assert " ERROR ingest." not in log
    assert " ERROR gateway." not in log
    assert "Exception in thread" not in log


@pytest.mark.backends(EMBEDDED)
def test_garbage_right_after_a_request_ends_the_connection_at_once(ingest: Ingest) -> None:
    """Found by the generated cases: the service aborts on the garbage while its answer to the
    request is on its way; pynetdicom's state machine then refused that answer, over and over,
    until its 30 s timer closed the connection (or its thread died, leaving it open)."""
    gateway = ingest.start()
    data = request(gateway.port) + b"x\x00\x00\x00\x00\x0a" + bytes(10)
    for _ in range(50):
        started = time.monotonic()
        exchange(gateway, data)
        assert time.monotonic() - started < 5
    assert dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY").ok


@pytest.mark.backends(EMBEDDED)
def test_silent_peers_are_dropped_and_do_not_hold_up_others(ingest: Ingest, inbox: Path) -> None:
    # Long enough that a sender held up by the silent peers would be seen to be.
    network_timeout = 6.0
    gateway = ingest.start(max_associations=3, network_timeout_seconds=network_timeout)
    # Two peers that associate and then stop: one says nothing, one stops half-way through
    # a PDU. They hold two of the three places.
    silent = [socket.create_connection((gateway.host, gateway.port)) for _ in range(2)]
    for sock in silent:
        sock.sendall(request(gateway.port))
        assert sock.recv(1) == b"\x02"  # the A-ASSOCIATE-AC begins
    silent[1].sendall(struct.pack(">BBI", 0x04, 0, 1000) + bytes(10))
    # A slow-loris peer: half a PDU header, then nothing.
    loris = socket.create_connection((gateway.host, gateway.port))
    loris.sendall(b"\x01\x00\x00")
    with ingest.events() as events:
        series = ct_series(inbox, 3)
        started = time.monotonic()
        dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series], "GATEWAY").check()
        assert time.monotonic() - started < network_timeout - 1  # not held up
        events.wait_for(1)
    for sock in silent:  # dropped after the network timeout, as aborted
        sock.settimeout(network_timeout + 10)
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(65536):
                pass
        sock.close()
    wait_until(lambda: open_associations(ingest) == 0, 10, "the silent peers' places are free")
    assert gateway.log_text().count(" aborted: ") >= 2
    loris.close()


# --- generated malformed data sets inside one good association --------------------------

#: How long one C-STORE may wait for its answer.
ANSWER_SECONDS = 15.0
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
REFERENCED_IMAGE_SEQUENCE = 0x00081140
PRIVATE_UN = 0x00091001
SERIES_INSTANCE_UID = 0x0020000E
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
#: The largest length that is not "undefined".
HUGE_LENGTH = 0xFFFFFFFE
#: An item of undefined length, and the item and sequence delimitation items, as implicit VR
#: little endian writes them (PS3.5 7.5).
ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED_LENGTH)
ITEM_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQUENCE_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


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


def _replaced(base: EncodedDataSet, tag: int, element: bytes | None) -> bytes:
    """The data set with element ``tag`` replaced by ``element`` (or dropped, for None)."""
    return b"".join(
        (element or b"") if element_tag == tag else encoded
        for element_tag, encoded in base.elements
    )


def _uid_element(tag: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    value += b"\x00" * (len(value) % 2)
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _nested_sequences(depth: int) -> bytes:
    """A private sequence holding a sequence holding ... ``depth`` levels, all delimited."""
    opening = struct.pack("<HHI", 0x0009, 0x1002, UNDEFINED_LENGTH) + ITEM
    innermost = struct.pack("<HHI", 0x0009, 0x1003, 2) + b"ab"
    return opening * depth + innermost + (ITEM_DELIMITER + SEQUENCE_DELIMITER) * depth


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

    The PDV framing is always right (the PDU-level cases are the test above), so every one of
    them gets an answer on the same association; none makes pynetdicom abort it.
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
        return HostileStore(kind, uid, _replaced(base, REFERENCED_IMAGE_SEQUENCE, variant), refused)
    if kind == "nested sequences":
        depth = draw(
            st.integers(1, 5 * MAX_SEQUENCE_DEPTH)
            | st.sampled_from([MAX_SEQUENCE_DEPTH, MAX_SEQUENCE_DEPTH + 1])
        )
        # In the private group before the Study Instance UID, where pydicom reads it too.
        private = dict(base.elements)[PRIVATE_UN] + _nested_sequences(depth)
        nested = _replaced(base, PRIVATE_UN, private)
        if depth <= MAX_SEQUENCE_DEPTH:
            return HostileStore(kind, uid, nested, Status.SUCCESS, uid)
        return HostileStore(kind, uid, nested, refused)
    mismatch = Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    if kind == "SOP Instance UID not the command's":
        return HostileStore(kind, other_uid, encoded, mismatch)
    if kind == "SOP Class UID not the command's":
        other_class = _uid_element(SOP_CLASS_UID, SECONDARY_CAPTURE_IMAGE_STORAGE)
        return HostileStore(kind, uid, _replaced(base, SOP_CLASS_UID, other_class), mismatch)
    # The data set lacks one of them: the command's is taken (docs/conformance.md).
    missing = draw(st.sampled_from([SOP_INSTANCE_UID, SOP_CLASS_UID]))
    return HostileStore(kind, uid, _replaced(base, missing, None), Status.SUCCESS, uid)


@pytest.mark.backends(RABBITMQ_S3)
def test_generated_malformed_data_sets_fail_alone_inside_one_association(ingest: Ingest) -> None:
    """Each generated bad C-STORE gets its precise answer, and a good one right after it on
    the same association succeeds; the one event lists exactly what was accepted, byte for
    byte, and the spool is left empty.

    Found by these cases: a data set cut short after its Series Instance UID (its last
    element's length running past the end, or a few bytes of a header after it) was answered
    with success, stored and announced, since only the identifying UIDs were read; sequences
    nested about 200 deep made pydicom's recursion fail the handler (0xC211); a data set whose
    SOP Instance UID was not the command's was stored under the data set's.
    """
    gateway = ingest.start()
    loop = asyncio.new_event_loop()
    numbers = itertools.count()
    accepted: dict[str, bytes] = {}  # SOP Instance UID: the data set sent
    kinds: collections.Counter[str] = collections.Counter()

    def store(association: RawAssociation, command_uid: str, encoded: bytes) -> int:
        data_set = DataSet(str(CT_IMAGE_STORAGE), command_uid, encoded)
        return loop.run_until_complete(
            asyncio.wait_for(association.store(data_set), ANSWER_SECONDS)
        )

    @settings(
        max_examples=20,  # of each kind: 220 malformed C-STOREs, 220 good ones
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=st.data())
    def bad_then_good(association: RawAssociation, data: st.DataObject) -> None:
        for kind in data.draw(st.permutations(KINDS), label="order"):
            number = next(numbers)
            base, good = small_data_set(2 * number), small_data_set(2 * number + 1)
            other_uid = str(derived_uid("command", number))
            case = data.draw(hostile_store(base, other_uid, kind), label=kind)
            assert store(association, case.command_uid, case.encoded) == case.status, kind
            kinds[f"{kind}: {case.status.name}"] += 1
            if case.stored_as is not None:
                accepted[case.stored_as] = case.encoded
            assert store(association, good.uids.sop_instance, good.encoded) == Status.SUCCESS
            accepted[good.uids.sop_instance] = good.encoded

    try:
        with ingest.events() as events:
            association = loop.run_until_complete(
                RawAssociation.open(
                    gateway.host, gateway.port, "GATEWAY", "FUZZER", [str(CT_IMAGE_STORAGE)]
                )
            )
            try:
                bad_then_good(association)
                loop.run_until_complete(association.release())
            finally:
                loop.run_until_complete(association.close())
            (message,) = events.wait_for(1)
            wait_until_handed_on(ingest.workdir / "spool")
            events.assert_no_more()
    finally:
        loop.close()
    print(sorted(kinds.items()))

    instances = released(message).instances
    assert sorted(i.sop_instance_uid for i in instances) == sorted(accepted)
    stored = ingest.objects()
    assert sorted(stored) == sorted(i.object_key for i in instances)
    for instance in instances:
        raw = stored[instance.object_key]
        assert raw[file_meta_length(raw) :] == accepted[instance.sop_instance_uid]
    wait_until(lambda: ingest.spool_files() == [], 10, "the spool is emptied")
    # Nothing outside the spool: the test's directory holds the spool and the gateway's own
    # directory (its configuration and log), nothing else.
    assert sorted(p.name for p in ingest.workdir.iterdir()) == ["gateway-1", "spool"]
    assert sorted(p.name for p in (ingest.workdir / "gateway-1").iterdir()) == [
        "gateway.log",
        "gateway.toml",
    ]
    log = gateway.log_text()
    assert "Exception in" not in log  # no handler failed (pynetdicom would answer 0xC211)
    assert " ERROR " not in log
