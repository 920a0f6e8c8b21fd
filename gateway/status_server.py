"""The HTTP endpoints of a service: ``/healthz``, ``/readyz`` and ``/metrics``.

- ``/healthz``: 200 while the process runs and can answer at all (liveness).
- ``/readyz``: runs every readiness check; 200 if all pass, else 503. The JSON body names each
  check and whether it is ``ok`` or ``failing``; what is wrong (which may name a bucket, a host
  or quote a library's error) goes to the log, once each time it changes, not to whoever asks.
- ``/metrics``: the service's Prometheus registry, in the exposition format prometheus-client
  writes.

Checks are plain callables that return ``None`` when fine and a short problem otherwise; the
services register them in a :class:`Checks` they are handed at start-up. The server runs on its
own daemon threads, so a slow check never holds up DICOM or message work; at most
:data:`MAX_CONNECTIONS` at once (more are closed at once), each given
:data:`REQUEST_TIMEOUT_SECONDS` to send its request, so that idle or half-sent connections
cannot pile up threads.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

#: How often the server's loop looks whether it is to stop: :meth:`StatusServer.stop` waits for
#: that look (socketserver's default of half a second held up every shutdown by as much).
STOP_POLL_SECONDS = 0.05
#: Connections served at once; a probe or a scraper needs one each, briefly.
MAX_CONNECTIONS = 16
#: How long a connection may take to send its request (and to take the answer).
REQUEST_TIMEOUT_SECONDS = 5.0
#: What ``/readyz`` says of a failing check (the problem itself is logged).
FAILING = "failing"
#: What ``/readyz`` says of a service that has not finished starting.
STARTING = "starting"

Check = Callable[[], str | None]


class Checks:
    """Named readiness checks, added by the services as they start.

    ``services`` names the services of the process; until each has called :meth:`started`
    (after adding its checks), the process is not ready, whatever the checks say.
    """

    def __init__(self, *services: str) -> None:
        self._checks: dict[str, Check] = {}
        self._notes: dict[str, Check] = {}
        self._starting = set(services)
        self._lock = threading.Lock()
        self._logged: dict[str, str | None] = {}

    def add(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def note(self, name: str, note: Check) -> None:
        """Something ``/readyz`` points out (a count, never an id or a name) without making the
        process unready: e.g. associations set aside, which need an operator, not a restart."""
        with self._lock:
            self._notes[name] = note

    def notes(self) -> dict[str, str]:
        with self._lock:
            notes = dict(self._notes)
        results = {}
        for name, note in notes.items():
            try:
                text = note()
            except GatewayError as exc:
                text = f"not known: {exc}"
            if text is not None:
                results[name] = text
        return results

    def started(self, service: str) -> None:
        with self._lock:
            self._starting.discard(service)

    def run(self) -> dict[str, str | None]:
        with self._lock:
            checks = dict(self._checks)
            starting = sorted(self._starting)
        results: dict[str, str | None] = {f"{s}-started": STARTING for s in starting}
        for name, check in checks.items():
            try:
                results[name] = check()
            except GatewayError as exc:
                results[name] = str(exc)
        self._log_changes(results)
        return results

    def _log_changes(self, results: dict[str, str | None]) -> None:
        with self._lock:
            changed = {n: p for n, p in results.items() if self._logged.get(n) != p}
            self._logged.update(changed)
        for name, problem in sorted(changed.items()):
            if problem == STARTING:
                continue
            if problem is not None:
                log.warning("readiness check %s failing: %s", name, problem)
            else:
                log.info("readiness check %s ok", name)


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most :data:`MAX_CONNECTIONS` of them."""

    daemon_threads = True
    # socketserver's default backlog is 5: a burst of connections (probes, or a peer opening
    # many) overflowed it, and Linux dropped the SYNs, which clients retry after 1, 2, 4 ... s;
    # one probe waited over a minute behind 2,000 half-sent requests.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug(
                "http %s: %d connections open, closing this one", client_address, MAX_CONNECTIONS
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints the traceback to stderr; a client that went away is not news.
        log.debug("http %s: connection ended with an error", client_address, exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class StatusServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, checks: Checks) -> None:
        handler = _handler(registry, checks)
        self._server = _BoundedServer((host, port), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": STOP_POLL_SECONDS},
            name="status-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _handler(registry: CollectorRegistry, checks: Checks) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dicom-gateway"
        timeout = REQUEST_TIMEOUT_SECONDS

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._json(HTTPStatus.OK, {"status": "alive"})
            elif path == "/readyz":
                results = checks.run()
                failed = {name: problem for name, problem in results.items() if problem}
                body: dict[str, Any] = {
                    "status": "not ready" if failed else "ready",
                    "checks": {name: _shown(p) for name, p in results.items()},
                }
                notes = checks.notes()
                if notes:
                    body["attention"] = notes
                self._json(HTTPStatus.SERVICE_UNAVAILABLE if failed else HTTPStatus.OK, body)
            elif path == "/metrics":
                self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(registry))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})

        def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            self._send(status, "application/json", json.dumps(body).encode())

        def _send(self, status: HTTPStatus, content_type: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s " + format, self.client_address[0], *args)

    return Handler


def _shown(problem: str | None) -> str:
    """A check's result as ``/readyz`` shows it to anyone who asks."""
    if problem is None:
        return "ok"
    return STARTING if problem == STARTING else FAILING


def start_status_server(
    host: str, port: int | Literal["auto"], registry: CollectorRegistry, checks: Checks
) -> StatusServer | None:
    """Serve on ``host:port``; None if the port is 0 (turned off). ``"auto"``: a free port
    chosen by the system (:attr:`StatusServer.port` says which)."""
    if port == 0:
        return None
    try:
        server = StatusServer(host, 0 if port == "auto" else port, registry, checks)
    except OSError as exc:
        raise GatewayError(f"cannot serve health and metrics on {host}:{port}: {exc}") from exc
    server.start()
    log.info("health and metrics on http://%s:%d (/healthz, /readyz, /metrics)", host, server.port)
    return server
