"""Data set fragments sent in runs leave as the very PDUs pynetdicom would send, in order."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest
from pynetdicom import AE
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_ABORT, P_DATA
from pynetdicom.transport import AssociationSocket

from gateway.netdicom.ae import make_prompt
from gateway.netdicom.pdata_run import RUN_BYTES, PDataRun, data_set_fragment, is_last
from gateway_client.testing import wait_until

COMMAND_LAST = 0x03
DATA = 0x00
DATA_LAST = 0x02


def _pdata(*values: tuple[int, bytes]) -> P_DATA:
    primitive = P_DATA()
    primitive.presentation_data_value_list.extend(values)
    return primitive


def _wire(primitives: list[P_DATA]) -> bytes:
    return b"".join(P_DATA_TF(p).encode() for p in primitives)


def _message(context_id: int, fragments: int, size: int) -> list[P_DATA]:
    """A command in one fragment, then a data set in ``fragments`` fragments of ``size``."""
    data = [
        _pdata((context_id, bytes([DATA_LAST if n == fragments - 1 else DATA]) + bytes([n]) * size))
        for n in range(fragments)
    ]
    return [_pdata((context_id, bytes([COMMAND_LAST]) + b"command")), *data]


def test_a_run_holds_each_fragment_encoded_as_pynetdicom_encodes_it() -> None:
    fragments = _message(3, 5, 1000)[1:]
    run = PDataRun()
    for primitive in fragments:
        found = data_set_fragment(primitive)
        assert found is not None
        run.add(*found)
    assert run.encoded() == _wire(fragments)
    assert run.count == 5
    assert not run.full


@pytest.mark.parametrize(
    ("primitive", "expected"),
    [
        (_pdata((1, b"\x00abc")), (1, b"\x00abc")),
        (_pdata((5, b"\x02abc")), (5, b"\x02abc")),
        (_pdata((1, b"\x01cmd")), None),  # a command fragment
        (_pdata((1, b"\x03cmd")), None),  # a command's last fragment
        (_pdata((1, b"\x00a"), (1, b"\x02b")), None),  # two values: left as it is
        (_pdata((1, b"")), None),
        (_pdata(), None),
        (PDataRun(), None),
        (A_ABORT(), None),
    ],
)
def test_what_counts_as_one_data_set_fragment(
    primitive: object, expected: tuple[int, bytes] | None
) -> None:
    assert data_set_fragment(primitive) == expected


def test_the_last_fragment_is_told_by_its_control_header() -> None:
    assert is_last(b"\x02x")
    assert not is_last(b"\x00x")


def _received(peer: socket.socket, into: bytearray) -> None:
    with contextlib.suppress(OSError):  # the test closes the other end
        while chunk := peer.recv(65536):
            into += chunk


def test_the_dul_sends_the_same_bytes_as_pynetdicom_in_the_same_order() -> None:
    """Two messages whose data sets span several runs (16 KiB fragments, as to dcmtk's
    storescp), on a DUL in state 6 over a socket pair, against pynetdicom's own encoding of
    every primitive one by one."""
    ours, peer = socket.socketpair()
    assoc = Association(AE(), MODE_ACCEPTOR)
    assoc.set_socket(AssociationSocket(assoc, client_socket=ours))
    make_prompt(assoc)
    dul = assoc.dul
    assert dul.event_queue.get_nowait() == "Evt5"  # the accepted connection
    dul.state_machine.current_state = "Sta6"
    fragments = 2 * RUN_BYTES // 16384 + 3
    primitives = _message(1, fragments, 16378) + _message(3, 4, 16378)
    expected = _wire(primitives)
    wire = bytearray()
    reader = threading.Thread(target=_received, args=(peer, wire), daemon=True)
    reader.start()
    dul.start()
    try:
        for primitive in primitives:
            dul.send_pdu(primitive)
        wait_until(lambda: len(wire) >= len(expected), 10, "every PDU on the wire")
    finally:
        dul.kill_dul()
        dul.join(5)
        ours.close()
        reader.join(5)
        peer.close()
    assert bytes(wire) == expected


def test_a_pending_run_is_queued_before_any_other_primitive() -> None:
    """A data set cut short (an abort from another thread, say) keeps its order: the fragments
    collected so far go first."""
    assoc = Association(AE(), MODE_ACCEPTOR)
    ours, peer = socket.socketpair()
    assoc.set_socket(AssociationSocket(assoc, client_socket=ours))
    make_prompt(assoc)
    dul = assoc.dul
    try:
        data = _message(1, 3, 100)[1:3]  # two fragments, neither the last
        for primitive in data:
            dul.send_pdu(primitive)
        assert dul.to_provider_queue.empty()
        abort = A_ABORT()
        dul.send_pdu(abort)
        run, after = dul.to_provider_queue.get_nowait(), dul.to_provider_queue.get_nowait()
        assert isinstance(run, PDataRun)
        assert run.encoded() == _wire(data)
        assert after is abort
    finally:
        ours.close()
        peer.close()
