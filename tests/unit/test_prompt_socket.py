"""The prompt socket reads whole PDUs however they arrive, allocates for what arrived rather
than for what a header announced, and sees readiness on any descriptor."""

from __future__ import annotations

import os
import socket
import threading
import tracemalloc

import pytest

from gateway.netdicom.prompt_socket import FIRST_READ_BYTES, PromptSocket


def _reader(connection: socket.socket) -> PromptSocket:
    """Only the reading half of a PromptSocket, on one end of a socket pair."""
    reader = PromptSocket.__new__(PromptSocket)
    reader.socket = connection
    return reader


@pytest.mark.parametrize("size", [300_000, 3 * FIRST_READ_BYTES + 5], ids=["pdu", "large-pdu"])
def test_socket_reads_a_whole_pdu_sent_in_pieces(size: int) -> None:
    ours, peer = socket.socketpair()
    payload = os.urandom(size)

    def send_in_pieces() -> None:
        for start in range(0, len(payload), 7000):
            peer.sendall(payload[start : start + 7000])

    sender = threading.Thread(target=send_in_pieces)
    with ours, peer:
        wrapped = _reader(ours)
        sender.start()
        assert wrapped.recv(len(payload)) == payload
        sender.join()


def test_socket_returns_what_arrived_when_the_peer_closes() -> None:
    ours, peer = socket.socketpair()
    with ours:
        wrapped = _reader(ours)
        peer.sendall(b"abc")
        peer.close()
        assert wrapped.recv(10) == bytearray(b"abc")


def test_readiness_is_seen_on_descriptors_above_select_s_limit() -> None:
    """A gateway with hundreds of associations has descriptors above 1023."""
    ours, peer = socket.socketpair()
    high = socket.socket(fileno=os.dup2(ours.fileno(), 1500))  # needs RLIMIT_NOFILE > 1500
    ours.close()
    with high, peer:
        wrapped = _reader(high)
        wrapped._is_connected = True
        # (Taking it for closed would reach for the association's event queue, which this
        # bare socket has not: the test would fail with an AttributeError.)
        assert not wrapped.ready
        peer.sendall(b"x")
        assert wrapped.ready


def test_an_announced_length_is_not_allocated_before_the_bytes_arrive() -> None:
    """A hostile header may claim 2 GiB; memory follows what was sent, not what was claimed."""
    ours, peer = socket.socketpair()
    with ours:
        wrapped = _reader(ours)
        peer.sendall(b"x" * 64)
        peer.close()
        tracemalloc.start()
        try:
            assert wrapped.recv(0x7FFFFFFF) == bytearray(b"x" * 64)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * FIRST_READ_BYTES


class _RecordingSocket(socket.socket):
    """A real TCP socket that notes, in order, each quick-ACK request and each read."""

    calls: list[str]

    def setsockopt(self, level: int, option: int, value: int) -> None:  # type: ignore[override]
        if (level, option) == (socket.IPPROTO_TCP, getattr(socket, "TCP_QUICKACK", None)):
            self.calls.append("quickack")
        super().setsockopt(level, option, value)

    def recv_into(self, buffer: memoryview, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        self.calls.append("read")
        return super().recv_into(buffer, nbytes, flags)


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
def test_quick_acks_are_re_armed_before_every_read() -> None:
    """Linux leaves quick-ACK mode on its own; a Nagle sender's PDU body waits for our ACK."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        peer = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    ours = _RecordingSocket(fileno=accepted.detach())
    ours.calls = []
    payload = os.urandom(50_000)

    def send_in_pieces() -> None:
        for start in range(0, len(payload), 5000):
            peer.sendall(payload[start : start + 5000])

    sender = threading.Thread(target=send_in_pieces)
    with ours, peer:
        sender.start()
        assert _reader(ours).recv(len(payload)) == payload
        sender.join()
    reads = ours.calls.count("read")
    assert reads >= 1
    assert ours.calls == ["quickack", "read"] * reads
