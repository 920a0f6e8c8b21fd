"""The HTTP endpoints of a service: ``/healthz``, ``/readyz`` and ``/metrics``.

- ``/healthz``: 200 while the process runs and can answer at all (liveness).
- ``/readyz``: runs every readiness check; 200 if all pass, else 503. The JSON body names each
  check and says what is wrong with the failing ones.
- ``/metrics``: the service's Prometheus registry, in the exposition format prometheus-client
  writes.

Checks are plain callables that return ``None`` when fine and a short problem otherwise; the
services register them in a :class:`Checks` they are handed at start-up. The server runs on its
own daemon threads, so a slow check never holds up DICOM or message work.
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

Check = Callable[[], str | None]


class Checks:
    """Named readiness checks, added by the services as they start.

    ``services`` names the services of the process; until each has called :meth:`started`
    (after adding its checks), the process is not ready, whatever the checks say.
    """

    def __init__(self, *services: str) -> None:
        self._checks: dict[str, Check] = {}
        self._starting = set(services)
        self._lock = threading.Lock()

    def add(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def started(self, service: str) -> None:
        with self._lock:
            self._starting.discard(service)

    def run(self) -> dict[str, str | None]:
        with self._lock:
            checks = dict(self._checks)
            starting = sorted(self._starting)
        results: dict[str, str | None] = {f"{s}-started": "starting" for s in starting}
        for name, check in checks.items():
            try:
                results[name] = check()
            except GatewayError as exc:
                results[name] = str(exc)
        return results


class StatusServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, checks: Checks) -> None:
        handler = _handler(registry, checks)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
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

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._json(HTTPStatus.OK, {"status": "alive"})
            elif path == "/readyz":
                results = checks.run()
                failed = {name: problem for name, problem in results.items() if problem}
                body: dict[str, Any] = {
                    "status": "not ready" if failed else "ready",
                    "checks": {name: problem or "ok" for name, problem in results.items()},
                }
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
