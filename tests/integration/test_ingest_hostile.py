"""Hostile peers on the SCP port: generated malformed PDUs and association requests, and peers
that go silent. Each ends that connection only; the service goes on, announces nothing for
it, and gives its association's place back."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.dicom_codes import VERIFICATION_SOP_CLASS
from tests.integration.conftest import EMBEDDED, Ingest
from tests.support import dcmtk
from tests.support.factories import ct_series
from tests.support.gateway import GatewayProcess
from tests.support.net import wait_until
from tests.support.raw_scu import association_request

#: Short, so that silent peers are seen to be dropped within the test.
NETWORK_TIMEOUT_SECONDS = 2.0
#: How long the service may take to end a connection whose peer has sent everything.
END_SECONDS = 15.0
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
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
        events.assert_quiet(1)
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
