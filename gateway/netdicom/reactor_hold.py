"""Keeping a requestor's reactor paused across a run of requests.

pynetdicom runs a reactor thread beside each association. Every ``send_c_store`` (and every
other request) pauses it first, so that it cannot take the response off the queue, and lets
it go when the response is in. Let go, the reactor runs one loop and then sleeps 1 ms before
it reaches its pause point again, and the next request has to wait for that, once per
instance sent (docs/performance.md).

:func:`requests_in_a_row` keeps the reactor at its pause point for a whole batch. What the
reactor would have noticed between two requests (the peer's abort, the connection's end) the
caller asks :func:`gateway.netdicom.association.has_ended` instead; within a request nothing
changes, as pynetdicom's reactor is paused then anyway. Only associations made by
:class:`gateway.netdicom.ae.PromptAE` have the checkpoint this needs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from pynetdicom.association import Association

#: How often a pause that waits for the reactor looks whether the reactor thread still runs.
_ALIVE_CHECK_SECONDS = 0.05


class HoldableCheckpoint(threading.Event):
    """pynetdicom's reactor checkpoint, which stays closed while it is held, and whose
    ``clear()`` returns only once the reactor is really stopped at it.

    pynetdicom opens it at the end of each request (``set()``); while held, that is put off
    until the hold ends. A hold always ends by opening it, so a reactor that was asked to stop
    meanwhile (an abort) then stops.

    pynetdicom pauses its reactor with ``clear()`` and then waits for the reactor's
    ``_is_paused`` flag; but the reactor raises that flag *before* it calls ``wait()``, so a
    ``clear()`` just after the reactor passed an open checkpoint finds the flag still up, the
    request goes out, and the reactor, running one more loop, can take the response off the
    queue ("Received unexpected C-STORE" and a request that waits for ever). Against a peer
    that answers in microseconds (ingest's fast path) that happened. Here the reactor's
    ``wait()`` records that it is blocked, under the same lock as the flag it waits for, and
    ``clear()`` from any other thread returns once it is, or once the reactor thread has ended.
    """

    def __init__(self, reactor: threading.Thread | None = None) -> None:
        super().__init__()
        self.held = False
        self._reactor = reactor
        self._state = threading.Condition()
        self._open = True  # as pynetdicom makes it
        self._reactor_blocked = False

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        if not self.held:
            self._open_checkpoint()

    def release_hold(self) -> None:
        self.held = False
        self._open_checkpoint()

    def _open_checkpoint(self) -> None:
        with self._state:
            self._open = True
            self._state.notify_all()

    def clear(self) -> None:
        reactor = self._reactor
        with self._state:
            self._open = False
            if reactor is None or threading.current_thread() is reactor:
                return
            while not self._reactor_blocked and reactor.is_alive():
                self._state.wait(_ALIVE_CHECK_SECONDS)

    def wait(self, timeout: float | None = None) -> bool:
        with self._state:
            if self._open:
                return True
            self._reactor_blocked = True
            self._state.notify_all()
            try:
                return self._state.wait_for(lambda: self._open, timeout)
            finally:
                self._reactor_blocked = False


@contextlib.contextmanager
def requests_in_a_row(assoc: Association) -> Iterator[None]:
    """Keep ``assoc``'s reactor paused until the block ends; raises TypeError for an
    association that :class:`~gateway.netdicom.ae.PromptAE` did not make."""
    checkpoint = assoc._reactor_checkpoint
    if not isinstance(checkpoint, HoldableCheckpoint):
        raise TypeError(f"association {assoc.name} has pynetdicom's own reactor checkpoint")
    checkpoint.clear()  # returns once the reactor is stopped at it (or has ended)
    checkpoint.held = True
    try:
        yield
    finally:
        checkpoint.release_hold()
