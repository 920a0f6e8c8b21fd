"""Tests marked ``heavy`` run one at a time; every other test runs beside them as usual.

The suite runs in several processes (pytest-xdist) on a small machine. A few tests load it far
more than the rest: the load test (a thousand associations answered within their deadlines),
the fault suites (gateways killed and restarted under senders, each restart with a readiness
deadline). Run beside each other they measure the machine, not the gateway: the load test's
senders timed out and the fault suite's restarts missed their deadline, with or without any
change to the gateway. Each holds an exclusive lock on a file shared by the session's
processes for its duration, so it waits at most for the heavy test already running.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def one_heavy_test_at_a_time(directory: Path) -> Iterator[None]:
    """Hold the heavy tests' lock for the block; ``directory`` is shared by every process of
    the test session."""
    fd = os.open(directory / "heavy-tests.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock
