"""A TCP link to a service that a test can cut and restore, like a network outage.

The gateway is configured with the link's port instead of the service's. While the link is cut,
open connections are reset and new ones are refused (accepted and closed at once), so the
gateway sees exactly what a broker or S3 outage looks like from its side.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from types import TracebackType


class Link:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept_loop, name="link", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Link:
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
        self._reset_all()
        self._wake_reader.close()
        self._wake_writer.close()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`restore`."""
        self._up.clear()
        self._reset_all()

    def restore(self) -> None:
        self._up.set()

    def _reset_all(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            _reset(sock)

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_reader in ready:
                    return
                client, _ = self._listener.accept()
                if not self._up.is_set():
                    _reset(client)
                    continue
                try:
                    upstream = socket.create_connection(self.upstream, timeout=10)
                except OSError:
                    _reset(client)
                    continue
                upstream.settimeout(None)
                for sock in (client, upstream):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    self._open += [client, upstream]
                for source, target in ((client, upstream), (upstream, client)):
                    threading.Thread(
                        target=_pump, args=(source, target), name="link-pump", daemon=True
                    ).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        _reset(source)
        _reset(target)


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the other pump
    sock.close()
