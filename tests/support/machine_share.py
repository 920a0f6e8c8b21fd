"""Tests marked ``alone`` run with no other integration test at the same time.

The suite runs in several processes (pytest-xdist) on a small machine. A load test measures
what the machine allows (a thousand associations answered within their deadlines), so its
figures only mean something when nothing else loads the machine; run beside the fault suite,
the load test's senders timed out and the fault suite's restarts missed their readiness
deadline, with or without any change to the gateway.

A readers-writer lock over two lock files shared by the test processes: every integration
test holds the *room* shared; an ``alone`` test takes the *turnstile* first, so that no test
starts meanwhile, then waits for the room to empty and holds it exclusively. It waits at most
for the tests already running to end.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _locked(path: Path, operation: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # closing drops the lock


@contextmanager
def machine_share(directory: Path, *, alone: bool) -> Iterator[None]:
    """Hold the machine shared, or ``alone``, for the block; ``directory`` is shared by every
    process of the test session."""
    turnstile, room = directory / "machine.turnstile", directory / "machine.room"
    if alone:
        with _locked(turnstile, fcntl.LOCK_EX), _locked(room, fcntl.LOCK_EX):
            yield
        return
    with _locked(turnstile, fcntl.LOCK_EX):
        pass  # waits while an ``alone`` test holds it
    with _locked(room, fcntl.LOCK_SH):
        yield
