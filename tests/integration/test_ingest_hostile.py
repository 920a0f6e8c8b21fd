"""Hostile peers on the SCP port: generated malformed PDUs and association requests, and peers
that go silent. Each ends that connection only; the service goes on, announces nothing for
it, and gives its association's place back. Generated malformed data sets inside a good
association fail that C-STORE only."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import itertools
import socket
import sqlite3
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from gateway.dicom_status import Status
from gateway_client.testing import GatewayProcess
from tests.support import dcmtk
from tests.support.factories import (
    CT_IMAGE_STORAGE,
    ct_series,
    derived_uid,
    file_meta_length,
    small_data_set,
)
from tests.support.hostile_dicom import KINDS, hostile, hostile_store, request
from tests.support.ingest import EMBEDDED, RABBITMQ_S3, Ingest, released
from tests.support.net import wait_until
from tests.support.raw_scu import DataSet, RawAssociation
from tests.support.settled import wait_until_handed_on

#: Short, so that silent peers are seen to be dropped within the test.
NETWORK_TIMEOUT_SECONDS = 2.0
#: How long the service may take to end a connection whose peer has sent everything.
END_SECONDS = 15.0


def exchange(gateway: GatewayProcess, data: bytes) -> None:
    """Send ``data``, close our side, and wait for the service to end the connection."""
    with socket.create_connection((gateway.host, gateway.port), timeout=END_SECONDS) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            # It may have ended the connection already: a reset, a broken pipe, or (when the
            # connection was gone before our shutdown) no connection at all.
            if not isinstance(exc, ConnectionError) and exc.errno != errno.ENOTCONN:
                raise
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
def test_generated_malformed_input_ends_only_that_connection(ingest: Ingest, seed: int) -> None:
    gateway = ingest.start(max_associations=2, network_timeout_seconds=NETWORK_TIMEOUT_SECONDS)

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @hypothesis_seed(seed)
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
def test_a_peer_cannot_forge_a_log_line(ingest: Ingest) -> None:
    """A calling AE title holding a newline, sent in a request made by hand (toolkits refuse
    to build one): whoever logs it, ingest or pynetdicom, writes it on one line, escaped."""
    gateway = ingest.start()
    forged = b"EVIL\nFORGED LINE"  # 16 bytes, a whole AE title
    data = request(gateway.port).replace(b"FUZZER".ljust(16), forged, 1)
    assert forged in data
    exchange(gateway, data)
    assert dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY").ok
    log = gateway.log_text()
    assert not any(line.startswith("FORGED") for line in log.splitlines())
    assert "EVIL\\nFORGED" in log


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
    # Both logged as aborted (the journal is written before the line, so the line may follow).
    wait_until(lambda: gateway.log_text().count(" aborted: ") >= 2, 10, "both silent peers logged")
    loris.close()


# --- generated malformed data sets inside one good association --------------------------

#: How long one C-STORE may wait for its answer.
ANSWER_SECONDS = 15.0


@pytest.mark.backends(RABBITMQ_S3)
@pytest.mark.parametrize("mode", ["refuse", "store"])
def test_generated_malformed_data_sets_fail_alone_inside_one_association(
    ingest: Ingest, seed: int, mode: str
) -> None:
    """Each generated bad C-STORE gets its precise answer, and a good one right after it on
    the same association succeeds; the one event lists exactly what was accepted, byte for
    byte, and the spool is left empty. With ``malformed_instances = "store"`` every data set
    refused with 0xC000 otherwise is accepted instead, under the command's SOP Instance UID,
    and stored as sent; a mismatch with the command is still refused.

    Found by these cases: a data set cut short after its Series Instance UID (its last
    element's length running past the end, or a few bytes of a header after it) was answered
    with success, stored and announced, since only the identifying UIDs were read; sequences
    nested about 200 deep made pydicom's recursion fail the handler (0xC211); a data set whose
    SOP Instance UID was not the command's was stored under the data set's.
    """
    gateway = ingest.start(malformed_instances=mode)
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
    @hypothesis_seed(seed)
    @given(data=st.data())
    def bad_then_good(association: RawAssociation, data: st.DataObject) -> None:
        for kind in data.draw(st.permutations(KINDS), label="order"):
            number = next(numbers)
            base, good = small_data_set(2 * number), small_data_set(2 * number + 1)
            other_uid = str(derived_uid("command", number))
            case = data.draw(hostile_store(base, other_uid, kind), label=kind)
            status, stored_as = case.status, case.stored_as
            if mode == "store" and status == Status.CANNOT_UNDERSTAND:
                status, stored_as = Status.SUCCESS, case.command_uid
            assert store(association, case.command_uid, case.encoded) == status, kind
            kinds[f"{kind}: {status.name}"] += 1
            if stored_as is not None:
                accepted[stored_as] = case.encoded
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
    # directory (its configuration, log and port file), nothing else.
    assert sorted(p.name for p in ingest.workdir.iterdir()) == ["gateway-1", "spool"]
    assert sorted(p.name for p in (ingest.workdir / "gateway-1").iterdir()) == [
        "gateway.log",
        "gateway.toml",
        "ports.json",
    ]
    log = gateway.log_text()
    assert "Exception in" not in log  # no handler failed (pynetdicom would answer 0xC211)
    assert " ERROR " not in log
