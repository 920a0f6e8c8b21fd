"""Acceptors: pynetdicom's threaded association server, made with the AE's request handler.

``AE.start_server`` makes its server with pynetdicom's request handler and shakes hands with a
TLS peer in the thread that accepts connections, so one peer that never finishes its handshake
stopped every other one; its listening socket keeps socketserver's backlog of 5, so the kernel
dropped the connections of a burst of senders, who then waited a second or more to retry.
:func:`start_acceptor` makes the server with the AE's own request handler (gateway/netdicom/ae.py),
leaves the handshake to each connection's own thread and listens with a backlog of
:data:`LISTEN_BACKLOG`. Both modes use it.

pynetdicom's server also runs a full garbage collection every 60th pass of its accepting loop
(a pass: a poll timeout or an accepted connection; its comment: ended associations' threads
were not collected otherwise), every 30 s at socketserver's poll interval when idle. Ours looks
ten times as often (:data:`STOP_POLL_SECONDS`), which made that a collection every 3 s, each
holding the interpreter lock while associations were being received: 6 % of the lock's time in
a profile of 2,000 small instances. It now runs every :data:`COLLECT_SECONDS` whatever the
load; Python's own generational collection still runs as objects are allocated.
"""

from __future__ import annotations

import gc
import socket
import ssl
import threading
import time
from datetime import datetime
from typing import Any, TypeVar, cast

from pynetdicom.transport import ThreadedAssociationServer

from gateway.netdicom.ae import GatewayAE

__all__ = [
    "LISTEN_BACKLOG",
    "ThreadedAssociationServer",
    "make_acceptor",
    "start_acceptor",
    "wrap_accepted",
]

#: Connections the kernel keeps waiting to be accepted (it caps this at ``somaxconn``).
LISTEN_BACKLOG = 1024
#: How often the accepting loop looks whether it is to stop: ``server.shutdown()`` waits for
#: that look, and socketserver's default of half a second held up every stop of ingest.
STOP_POLL_SECONDS = 0.05
#: How often the accepting loop collects garbage (see the module docstring).
COLLECT_SECONDS = 30.0

_Server = TypeVar("_Server", bound=ThreadedAssociationServer)


def make_acceptor(
    ae: GatewayAE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    server_class: type[_Server],
    **server_arguments: Any,
) -> _Server:
    """``ae.make_server(...)`` with the AE's request handler, registered with the AE as
    ``start_server`` does (the server's ``shutdown()`` takes itself off that list).

    ``server_arguments`` go to ``server_class`` with pynetdicom's own.
    """
    server = cast(
        _Server,
        ae.make_server(
            address,
            evt_handlers=evt_handlers,
            server_class=server_class,
            request_handler=ae.request_handler,
            **server_arguments,
        ),
    )
    ae._servers.append(server)
    return server


def wrap_accepted(context: ssl.SSLContext | None, connection: socket.socket) -> socket.socket:
    """An accepted connection, with TLS if ``context``; the handshake is left to its first read.

    That read happens on the connection's own thread.
    """
    if context is None:
        return connection
    return context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)


class _ListeningServer(ThreadedAssociationServer):
    request_queue_size = LISTEN_BACKLOG
    _collected_at: float | None = None

    def service_actions(self) -> None:
        """pynetdicom's periodic collection, by the clock instead of by passes of the loop."""
        now = time.monotonic()
        if self._collected_at is None:
            self._collected_at = now
        elif now - self._collected_at >= COLLECT_SECONDS:
            self._collected_at = now
            gc.collect()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None  # listening
        connection, address = self.socket.accept()
        return wrap_accepted(self.ssl_context, connection), address


def start_acceptor(
    ae: GatewayAE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    ssl_context: ssl.SSLContext | None = None,
) -> ThreadedAssociationServer:
    """``ae.start_server(address, block=False, ...)``, as described in the module docstring."""
    server = make_acceptor(ae, address, evt_handlers, _ListeningServer, ssl_context=ssl_context)
    name = f"AcceptorServer@{datetime.now():%Y%m%d%H%M%S}"
    threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": STOP_POLL_SECONDS},
        name=name,
        daemon=True,
    ).start()
    return server
