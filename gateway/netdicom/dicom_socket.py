"""Socket options for every DICOM connection we open or accept."""

import socket

from pynetdicom import evt


def tune(sock: socket.socket) -> None:
    # Nagle plus delayed ACKs stall every small PDU write by up to 40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_QUICKACK"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def handle_conn_open(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: tune the association's socket as soon as it exists.

    It also gets the network timeout as its own: pynetdicom reads a PDU (and a TLS handshake)
    with a blocking call once the first bytes are there, and a peer that stops half-way held
    that connection's threads, and its association's place, for ever.
    """
    connection = event.assoc.dul.socket
    raw = None if connection is None else connection.socket
    if raw is not None:  # None: closed already, nothing to tune
        tune(raw)
        raw.settimeout(event.assoc.network_timeout)
