"""The prompt connection: a PDU read into one buffer, readiness asked of ``poll()``.

pynetdicom reads a PDU 4 KiB per ``recv`` call and appends each piece to a growing buffer (64
calls and copies for a 256 KiB PDU); :meth:`PromptSocket.recv` reads with as few
``recv_into`` calls as the kernel allows. Its other changes are fixes: ``select()`` refuses
descriptors above 1023, and the descriptor of a connection that was never made is closed.

Every read first re-arms ``TCP_QUICKACK``. Linux leaves quick-ACK mode again on its own, and
then delays the ACK of what arrived by up to 40 ms; a sender with Nagle's algorithm on (dcmtk's
default, and many modalities') writes a PDU as its header and then its body, and the body waits
for that ACK. Re-armed before each read, every segment is acknowledged at once.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl

from pynetdicom import evt
from pynetdicom.transport import AssociationSocket

#: A PDU's first read buffer; larger PDUs grow it as their bytes arrive. Ingest accepts
#: 256 KiB PDUs by default, so one read usually takes a whole PDU.
FIRST_READ_BYTES = 1024 * 1024
#: Linux only; elsewhere delayed ACKs stay as the system has them.
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
_TCP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
#: What ``poll()`` reports for a socket with something to read (data, or its end).
READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


class PromptSocket(AssociationSocket):
    """A connection that reads each PDU into one buffer, and asks ``poll()`` whether data is
    waiting."""

    @property
    def ready(self) -> bool:
        """pynetdicom's check, with ``poll()`` where pynetdicom uses ``select()``.

        ``select()`` refuses descriptors above 1023, which a gateway serving hundreds of
        associations reaches; pynetdicom then takes the connection for closed (Evt17).
        """
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        # An SSLSocket may hold decrypted bytes that poll() cannot see (as pynetdicom says).
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        poller = select.poll()
        try:
            poller.register(sock, READABLE)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed
            return False

    def _shutdown_socket(self) -> None:
        """pynetdicom's, except that the socket is closed even when ``shutdown()`` fails, as it
        does for a connection never made (refused, or a failed TLS handshake): pynetdicom
        then left the descriptor open until garbage collection."""
        sock = self.socket
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def send(self, bytestream: bytes) -> None:
        """pynetdicom's, with the rest of a partial write taken as a view, not a copy (a run of
        PDUs is 256 KiB)."""
        sock = self.socket
        if sock is None:
            self.event_queue.put("Evt17")  # closed already: as pynetdicom's send fails then
            return
        try:
            with memoryview(bytestream) as view:
                sent = 0
                while sent < len(view):
                    sent += sock.send(view[sent:])
            evt.trigger(self.assoc, evt.EVT_DATA_SENT, {"data": bytestream})
        except OSError:
            self.event_queue.put("Evt17")  # transport connection closed

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes``, or fewer if the peer closed the connection (as pynetdicom).

        Room is made as data arrives, never for the length a peer announced: a PDU header may
        claim 4 GiB and be followed by nothing.
        """
        data = bytearray(min(nr_bytes, FIRST_READ_BYTES))
        received = 0
        sock = self.socket
        quickack = _QUICKACK if sock is not None and sock.family in _TCP_FAMILIES else None
        while sock is not None and received < nr_bytes:
            if received == len(data):
                data += bytes(min(nr_bytes, 2 * len(data)) - len(data))
            if quickack is not None:
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            with memoryview(data) as view:
                count = sock.recv_into(view[received:])
            if count == 0:
                break
            received += count
        del data[received:]
        return data
