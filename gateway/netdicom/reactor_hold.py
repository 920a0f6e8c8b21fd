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
import time
from collections.abc import Iterator

from pynetdicom.association import Association

#: How often to look whether the reactor has reached its pause point: pynetdicom's own interval.
_PAUSE_POLL_SECONDS = 0.0001


class HoldableCheckpoint(threading.Event):
    """pynetdicom's reactor checkpoint, which stays closed while it is held.

    pynetdicom opens it at the end of each request (``set()``); while held, that is put off
    until the hold ends. A hold always ends by opening it, so a reactor that was asked to stop
    meanwhile (an abort) then stops.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held = False
        super().set()  # open, as pynetdicom makes it

    def set(self) -> None:
        if not self.held:
            super().set()

    def release_hold(self) -> None:
        self.held = False
        super().set()


@contextlib.contextmanager
def requests_in_a_row(assoc: Association) -> Iterator[None]:
    """Keep ``assoc``'s reactor paused until the block ends; raises TypeError for an
    association that :class:`~gateway.netdicom.ae.PromptAE` did not make."""
    checkpoint = assoc._reactor_checkpoint
    if not isinstance(checkpoint, HoldableCheckpoint):
        raise TypeError(f"association {assoc.name} has pynetdicom's own reactor checkpoint")
    checkpoint.clear()
    while not assoc._is_paused and assoc.is_established and assoc.is_alive():
        time.sleep(_PAUSE_POLL_SECONDS)
    checkpoint.held = True
    try:
        yield
    finally:
        checkpoint.release_hold()
