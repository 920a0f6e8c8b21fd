"""A background thread that runs for as long as a ``with`` block: maintenance, retention and
the study watch each loop on one until the block ends and their stop event is set."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def in_background(name: str, work: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run ``work(stop)`` on a thread of its own; on leaving the block, set ``stop`` and wait
    for ``work`` to return."""
    stop = threading.Event()
    thread = threading.Thread(target=work, args=(stop,), name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
