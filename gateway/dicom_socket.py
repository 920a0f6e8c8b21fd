"""Socket options for every DICOM connection we open or accept."""

import socket

from pynetdicom import evt


def tune(sock: socket.socket) -> None:
    # Nagle plus delayed ACKs stall every small PDU write by up to 40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_QUICKACK"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def handle_conn_open(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: tune the association's socket as soon as it exists."""
    raw = getattr(event.assoc.dul.socket, "socket", None)
    if isinstance(raw, socket.socket):
        tune(raw)
