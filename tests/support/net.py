"""Small helpers for tests that talk to servers on this machine: free ports and polling."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now.

    The port is released before it is returned, so another process could take it in between;
    on a test machine that race is rare enough, and the server start-up then fails loudly.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    description: str,
    interval: float = 0.05,
) -> None:
    """Call ``condition`` until it returns true; raise :class:`TimeoutError` after ``timeout``.

    For readiness checks that ask the real thing (a C-ECHO, an AMQP handshake) rather than
    sleeping for a fixed time and hoping.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{description}: not reached within {timeout:g} s")
        time.sleep(interval)
