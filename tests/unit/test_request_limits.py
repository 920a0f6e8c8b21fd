"""A connection's first PDU refused before it is decoded: the decisions on its header and body,
the rejection, and the prompt DUL refusing one on a socket pair."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.transport import AddressInformation, AssociationSocket

from gateway.netdicom.ae import make_prompt
from gateway.netdicom.request_limits import (
    MAX_PRESENTATION_CONTEXTS,
    Refusal,
    RequestLimit,
    answer_refused,
    body_refusal,
    header_refusal,
    presentation_contexts,
    rejection,
)


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def request_body(contexts: int, *, tail: bytes = b"") -> bytes:
    """An A-ASSOCIATE-RQ's body (after the PDU header) with ``contexts`` presentation
    contexts, an application context before them and user information after them."""
    fixed = struct.pack(">HH", 1, 0) + b"GATEWAY".ljust(16) + b"SENDER".ljust(16) + bytes(32)
    application = _item(0x10, b"1.2.840.10008.3.1.1.1")
    context = _item(
        0x20,
        bytes(4) + _item(0x30, b"1.2.840.10008.1.1") + _item(0x40, b"1.2.840.10008.1.2"),
    )
    user = _item(0x50, _item(0x51, struct.pack(">I", 16384)))
    return fixed + application + context * contexts + user + tail


@pytest.mark.parametrize(
    ("length", "max_bytes", "refusal"),
    [
        (100, 4096, None),
        (4090, 4096, None),  # 4,096 with its 6-byte header: at the limit
        (4091, 4096, Refusal.TOO_LONG),
        (7_892_488, 262_144, Refusal.TOO_LONG),  # the 8 MB request of issue 17
        (2**32 - 1, 262_144, Refusal.TOO_LONG),
    ],
)
def test_a_first_pdu_longer_than_the_limit_is_refused_on_its_header(
    length: int, max_bytes: int, refusal: Refusal | None
) -> None:
    assert header_refusal(length, max_bytes) is refusal


@pytest.mark.parametrize(
    ("body", "counted"),
    [
        (request_body(0), 0),
        (request_body(1), 1),
        (request_body(128), 128),
        (request_body(129), 129),
        (request_body(1000), MAX_PRESENTATION_CONTEXTS + 1),  # counting stops there
        (request_body(3)[:-3], 3),  # the last item cut short: not counted, nor what follows
        (request_body(3)[:60], 0),  # not even the fixed fields
        (request_body(2, tail=b"\x20\x00\xff\xff"), 2),  # an item running past the end
    ],
)
def test_presentation_contexts_are_counted_from_the_item_headers(body: bytes, counted: int) -> None:
    assert presentation_contexts(body) == counted


@pytest.mark.parametrize(
    ("pdu_type", "body", "refusal"),
    [
        (0x01, request_body(128), None),
        (0x01, request_body(129), Refusal.TOO_MANY_CONTEXTS),
        (0x01, request_body(0), None),  # pynetdicom's negotiation refuses this one itself
        (0x04, request_body(129), None),  # not a request: the state machine aborts
    ],
)
def test_a_request_with_more_contexts_than_ps3_8_allows_is_refused_undecoded(
    pdu_type: int, body: bytes, refusal: Refusal | None
) -> None:
    assert body_refusal(pdu_type, body) is refusal


def test_the_rejection_is_permanent_by_the_service_user_with_no_reason_given() -> None:
    pdu = A_ASSOCIATE_RJ()
    pdu.decode(rejection())
    assert (pdu.result, pdu.source, pdu.reason_diagnostic) == (1, 1, 1)


def _read_all(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_the_rest_of_a_refused_request_is_read_so_that_the_rejection_arrives() -> None:
    """The sender writes its whole request before it reads; closing on its unread bytes would
    reset the connection under the rejection."""
    ours, peer = socket.socketpair()
    rest = 4 * 1024 * 1024
    with ours, peer:
        writer = threading.Thread(target=peer.sendall, args=(bytes(rest),))
        writer.start()
        answer_refused(ours, rest)
        writer.join(10)
        ours.close()
        assert _read_all(peer) == rejection()


def _request_header(length: int) -> bytes:
    return struct.pack(">BBI", 0x01, 0, length)


@pytest.mark.parametrize(
    ("first_pdu", "refusal"),
    [
        (_request_header(1024 * 1024) + bytes(1024 * 1024), Refusal.TOO_LONG),
        (_request_header(len(request_body(200))) + request_body(200), Refusal.TOO_MANY_CONTEXTS),
    ],
)
def test_the_prompt_dul_rejects_a_refused_request_and_ends_the_association(
    first_pdu: bytes, refusal: Refusal
) -> None:
    """On a socket pair: the rejection reaches the peer, then the end of the connection, and
    the association's thread ends at once instead of waiting for a request until the ACSE
    timeout."""
    ours, peer = socket.socketpair()
    refused: list[Refusal] = []
    assoc = Association(AE(), MODE_ACCEPTOR)
    assoc.acse_timeout = 30
    assoc.requestor.address_info = AddressInformation("127.0.0.1", 104)
    assoc.set_socket(AssociationSocket(assoc, client_socket=ours))
    make_prompt(assoc, RequestLimit(65536, refused.append))
    with peer:
        writer = threading.Thread(target=peer.sendall, args=(first_pdu,))
        writer.start()
        started = time.monotonic()
        assoc.start()
        peer.settimeout(10)
        assert _read_all(peer) == rejection()
        assoc.join(10)
        writer.join(10)
        assert not assoc.is_alive()
        assert not assoc.dul.is_alive()
        assert time.monotonic() - started < 5
    assert refused == [refusal]
    assert assoc.dul.state_machine.current_state == "Sta1"
