"""Backpressure for pynetdicom's outgoing PDU queue.

pynetdicom's sender thread turns a whole data set into P-DATA PDUs and puts them on the
association's unbounded provider queue faster than the network thread can send them: sending
a 1 GiB instance queued the whole gigabyte in memory. Swapping in this queue makes the sender
wait while ``limit`` PDUs are waiting, so memory stays at about ``limit`` times the max PDU size.

A put never waits on a network thread that has stopped (peer gone): it then goes through
at once, as before, and pynetdicom handles the broken association as usual.

Bounded memory is promised in every mode, so plain mode installs it too.
"""

from __future__ import annotations

import queue
from typing import Any, Protocol

from pynetdicom.association import Association

#: PDUs waiting at most; with the 256 KiB PDUs we ask for, a few MiB per association.
DEFAULT_LIMIT = 16
_RECHECK_SECONDS = 0.05


class _Worker(Protocol):
    def is_alive(self) -> bool: ...


class BoundedProviderQueue(queue.Queue[Any]):
    def __init__(self, worker: _Worker, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__()
        self._worker = worker
        self._limit = limit

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.not_full:
            while self._qsize() >= self._limit and self._worker.is_alive():
                self.not_full.wait(_RECHECK_SECONDS)
            self._put(item)
            self.unfinished_tasks += 1
            self.not_empty.notify()


class NotBounded(RuntimeError):
    """The association's outgoing queue could not be replaced: it already held primitives."""


def install(assoc: Association, limit: int = DEFAULT_LIMIT) -> None:
    """Give an established association's DUL a bounded provider queue.

    Only an empty queue is replaced, so that nothing already queued is lost; raises
    :class:`NotBounded` otherwise (the association must then not send a data set).
    """
    dul = assoc.dul
    if dul.to_provider_queue.qsize():
        raise NotBounded(f"{dul.to_provider_queue.qsize()} primitives were already queued")
    dul.to_provider_queue = BoundedProviderQueue(dul, limit)
