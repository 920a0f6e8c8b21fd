"""How the prompt DUL's threads wake each other (gateway/netdicom/prompt_dul.py): a pipe that
interrupts a ``poll()``, and a queue that says when something was put in it."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any


class Waker:
    """A pipe another thread writes to interrupt a ``poll()``; one pending byte is enough."""

    def __init__(self) -> None:
        self.fileno, self._write_end = os.pipe()
        os.set_blocking(self.fileno, False)
        os.set_blocking(self._write_end, False)
        # Once closed, the descriptor numbers may belong to another connection: a late
        # wake-up must not write there, hence the lock shared with close().
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            # A full pipe means a wake-up is already pending.
            with contextlib.suppress(BlockingIOError):
                os.write(self._write_end, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):  # empty: every pending wake-up is read
            while os.read(self.fileno, 4096):
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self.fileno)
            os.close(self._write_end)


def nobody() -> None:
    """Whom a DUL wakes when no association thread waits on it (a requestor's)."""


class NotifyingQueue(queue.Queue[Any]):
    """A queue that calls ``on_put`` after each put."""

    def __init__(self, on_put: Callable[[], None]) -> None:
        super().__init__()
        self._on_put = on_put

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._on_put()
