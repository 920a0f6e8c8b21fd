"""Waiting for a condition, asking an HTTP endpoint, finding a free port."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def wait_until(
    condition: Callable[[], bool], timeout: float, description: str, interval: float = 0.05
) -> None:
    """Call ``condition`` until it returns true; :class:`TimeoutError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{description}: not reached within {timeout:g} s")
        time.sleep(interval)


def http_get(host: str, port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET ``http://host:port/path``: its status and body, error statuses (503 from
    ``/readyz``) included. Raises :class:`OSError` when nothing answers.
    """
    try:
        url = f"http://{host}:{port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, for a peer that cannot report the port it was
    given (dcmtk's storescp). Another process may take it before the peer does: a gateway is
    started on port 0 instead (:class:`~gateway_client.testing.GatewayProcess`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
