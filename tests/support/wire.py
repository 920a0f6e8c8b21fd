"""What a DICOM sender really put on the wire: a recording TCP proxy and a parser for its capture.

dcmtk senders normalise some encodings before sending (padding, undefined lengths, re-deflating),
so the source file is not the reference for byte-exactness: the C-STORE data set as it crossed
the network is. Put :class:`RecordingProxy` between the sender and the gateway, then compare each
stored object's data set with :func:`parse_c_store_requests` of the recorded stream.
"""

from __future__ import annotations

import contextlib
import io
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

from pydicom.filereader import read_dataset

#: PDU types of the DICOM upper layer protocol (PS3.8 9.3).
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

C_STORE_RQ = 0x0001
_NO_DATA_SET = 0x0101
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Pdu:
    """One upper-layer PDU: its type and the bytes after its 6-byte header."""

    type: int
    payload: bytes


@dataclass(frozen=True)
class CStoreRequest:
    """One complete C-STORE-RQ as sent: its command's identifiers and the data set bytes."""

    affected_sop_instance_uid: str
    affected_sop_class_uid: str
    message_id: int
    presentation_context_id: int
    data_set: bytes


def split_pdus(stream: bytes) -> list[Pdu]:
    """Split a recorded stream into PDUs; a truncated last PDU (a cut connection) is dropped."""
    pdus = []
    offset = 0
    while offset + 6 <= len(stream):
        pdu_type, length = struct.unpack_from(">BxI", stream, offset)
        end = offset + 6 + length
        if end > len(stream):
            break
        pdus.append(Pdu(pdu_type, stream[offset + 6 : end]))
        offset = end
    return pdus


def iter_pdvs(pdu: Pdu) -> Iterator[tuple[int, int, bytes]]:
    """The PDV items of a P-DATA-TF: (presentation context id, message control header, fragment)."""
    if pdu.type != P_DATA_TF:
        raise ValueError(f"PDU type 0x{pdu.type:02x} is not a P-DATA-TF")
    offset = 0
    while offset < len(pdu.payload):
        (length,) = struct.unpack_from(">I", pdu.payload, offset)
        context_id, control = pdu.payload[offset + 4], pdu.payload[offset + 5]
        yield context_id, control, pdu.payload[offset + 6 : offset + 4 + length]
        offset += 4 + length


def parse_c_store_requests(stream: bytes) -> list[CStoreRequest]:
    """Every complete C-STORE-RQ in one connection's client-to-server stream, in order.

    A request whose data set was cut off (aborted association, dropped connection) is left out.
    The message control header says what a fragment is: bit 0 set for a command fragment, clear
    for a data set fragment; bit 1 set on the last fragment of either.
    """
    requests = []
    command = bytearray()
    data_set = bytearray()
    pending: tuple[str, str, int, int] | None = None  # the C-STORE-RQ waiting for its data set
    for pdu in split_pdus(stream):
        if pdu.type != P_DATA_TF:
            continue
        for context_id, control, fragment in iter_pdvs(pdu):
            is_command, is_last = bool(control & 0x01), bool(control & 0x02)
            if is_command:
                command += fragment
                if is_last:
                    pending = _c_store_command(bytes(command), context_id)
                    command.clear()
                    data_set.clear()
            elif pending is not None:
                data_set += fragment
                if is_last:
                    instance_uid, class_uid, message_id, pc_id = pending
                    requests.append(
                        CStoreRequest(instance_uid, class_uid, message_id, pc_id, bytes(data_set))
                    )
                    pending = None
                    data_set.clear()
    return requests


def _c_store_command(encoded: bytes, context_id: int) -> tuple[str, str, int, int] | None:
    """Decode a command set (always implicit VR little endian, PS3.7 6.3.1)."""
    command = read_dataset(io.BytesIO(encoded), is_implicit_VR=True, is_little_endian=True)
    if command.CommandField != C_STORE_RQ or command.CommandDataSetType == _NO_DATA_SET:
        return None
    return (
        str(command.AffectedSOPInstanceUID),
        str(command.AffectedSOPClassUID),
        int(command.MessageID),
        context_id,
    )


class RecordedConnection:
    """One connection through the proxy: the bytes the client sent, recorded as they arrived."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()
        self.severed = False
        self._lock = threading.Lock()
        self._client_bytes = bytearray()

    @property
    def client_bytes(self) -> bytes:
        with self._lock:
            return bytes(self._client_bytes)

    def c_store_requests(self) -> list[CStoreRequest]:
        return parse_c_store_requests(self.client_bytes)

    def _record(self, data: bytes) -> None:
        with self._lock:
            self._client_bytes += data

    def _sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


class RecordingProxy:
    """A TCP proxy on 127.0.0.1 that records every connection's client-to-server bytes.

    Use as a context manager; connect the sender to ``proxy.port``. ``TCP_NODELAY`` is set on
    both legs so the proxy does not add Nagle delays of its own to small PDUs.
    """

    def __init__(self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server((listen_host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._lock = threading.Lock()
        self._connections: list[RecordedConnection] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="proxy-accept", daemon=True
        )

    def __enter__(self) -> RecordingProxy:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._wake_writer.send(b"x")
        self._acceptor.join(timeout=5)
        self._listener.close()
        self._wake_reader.close()
        self._wake_writer.close()
        for connection in self.connections:
            for sock in connection._sockets():
                _close_quietly(sock)
        for thread in self._threads:
            thread.join(timeout=5)

    @property
    def connections(self) -> list[RecordedConnection]:
        """The connections accepted so far, oldest first."""
        with self._lock:
            return list(self._connections)

    def wait_closed(self, timeout: float = 10.0) -> list[RecordedConnection]:
        """Wait until every connection accepted so far has ended on both sides."""
        deadline = time.monotonic() + timeout
        for connection in self.connections:
            if not connection.closed.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"a proxied connection was still open after {timeout:g} s")
        return self.connections

    def c_store_requests(self, timeout: float = 10.0) -> list[list[CStoreRequest]]:
        """Per connection (oldest first), the complete C-STORE requests its client sent."""
        return [connection.c_store_requests() for connection in self.wait_closed(timeout)]

    def sever(self) -> None:
        """Reset every open connection at once (RST both ways), like a network failure."""
        for connection in self.connections:
            connection.severed = True
            for sock in connection._sockets():
                try:
                    # Linger 0 makes the close send RST; SHUT_RD wakes the pump blocked in recv
                    # without sending a FIN, and the pump then closes the connection.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    continue  # this leg has already been closed

    def _accept_loop(self) -> None:
        # A selector with a wake-up socket, because closing a listener does not reliably
        # interrupt a thread blocked in accept().
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_reader in ready:
                    return
                client, _ = self._listener.accept()
                self._start_connection(client)

    def _start_connection(self, client: socket.socket) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = RecordedConnection(client)
        with self._lock:
            self._connections.append(connection)
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            # Upstream down: the client sees its connection closed, as it would without a proxy.
            _close_quietly(client)
            connection.closed.set()
            return
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.upstream = upstream
        done = threading.Barrier(2, action=lambda: _finish(connection))
        for source, target, record in ((client, upstream, True), (upstream, client, False)):
            thread = threading.Thread(
                target=_pump,
                args=(connection, source, target, record, done),
                name="proxy-pump",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()


def _pump(
    connection: RecordedConnection,
    source: socket.socket,
    target: socket.socket,
    record: bool,
    done: threading.Barrier,
) -> None:
    try:
        while data := source.recv(_CHUNK):
            if record:
                connection._record(data)
            target.sendall(data)
        if not connection.severed:
            # Pass the half-close on, so the other side sees the end of the stream too.
            target.shutdown(socket.SHUT_WR)
    except OSError:
        # Reset or severed: tear the whole connection down, as a broken network would.
        for sock in connection._sockets():
            _close_quietly(sock)
    finally:
        # The second pump to get here runs the barrier's action, _finish: the connection is
        # over only when both directions are.
        done.wait()


def _finish(connection: RecordedConnection) -> None:
    for sock in connection._sockets():
        if connection.severed:
            sock.close()  # with linger 0: a reset, no orderly FIN first
        else:
            _close_quietly(sock)
    connection.closed.set()


def _close_quietly(sock: socket.socket) -> None:
    """Close ``sock``, first waking any thread blocked in recv on it (close alone does not)."""
    with contextlib.suppress(OSError):  # not connected any more: closing is all that is left
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
