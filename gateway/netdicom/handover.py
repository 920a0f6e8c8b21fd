"""A pynetdicom server for connections accepted by another process and handed over.

With ingest's worker processes the parent alone listens and accepts, and hands each connection
to a worker (ingest/listener.py, ingest/workers/); the worker serves what it is handed with
:class:`HandedConnectionsServer`, made by :func:`gateway.netdicom.acceptor.make_acceptor`. Both
modes use it.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, cast

from pynetdicom.transport import ThreadedAssociationServer

from gateway.netdicom.acceptor import wrap_accepted
from gateway.netdicom.ae import RecordingRequestHandler

log = logging.getLogger(__name__)


class HandedConnectionsServer(ThreadedAssociationServer):
    """pynetdicom's threaded server for connections accepted elsewhere; it has no socket.

    ``on_closed`` is called once for every connection handed to :meth:`take`, when it has
    ended, so that the parent knows how many each worker has.
    """

    #: As pynetdicom's association threads: a worker that stops does not wait for its peers.
    daemon_threads = True

    def __init__(self, *args: Any, on_closed: Callable[[], None], **kwargs: Any) -> None:
        self._on_closed = on_closed
        self._taking = True
        # ``take`` and ``shutdown`` in turn: once shut down, no connection starts a thread that
        # the shutdown's look at the open associations could miss.
        self._taking_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.socket is not None:  # the unbound socket socketserver made; not needed
            self.socket.close()

    def server_activate(self) -> None:
        """Nothing to listen on."""

    def server_close(self) -> None:
        """Nothing to close: each connection closes with its association."""

    def shutdown(self) -> None:
        """Take no more connections (there is no ``serve_forever`` loop to stop)."""
        with self._taking_lock:
            self._taking = False
        self.ae._servers.remove(self)

    def take(self, connection: socket.socket) -> None:
        """Serve a connection on a thread of its own, as if this server had accepted it."""
        with self._taking_lock:
            if self._taking:
                try:
                    address = connection.getpeername()
                    connection = wrap_accepted(self.ssl_context, connection)
                    self.process_request(connection, address)
                except (OSError, RuntimeError) as exc:  # peer gone; no thread to be had
                    log.warning("a handed-over connection cannot be served: %s", exc)
                else:
                    return
        connection.close()
        self._on_closed()

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._on_closed()

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        # make_acceptor configures the AE's request handler, which records its association
        # (socketserver's RequestHandlerClass is typed too loosely to say so).
        handler_class = cast(type[RecordingRequestHandler], self.RequestHandlerClass)
        handler = handler_class(request, client_address, self)
        # The association runs on a thread of its own; this connection's thread waits for it
        # so that ``on_closed`` comes when the connection is over, however it ended.
        if handler.association is not None:
            handler.association.join()
