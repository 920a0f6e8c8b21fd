"""The prompt DIMSE provider: an acceptor's association thread waits on its message queue.

pynetdicom's association thread sleeps 1 ms between looks for a decoded DIMSE message; one
C-STORE crosses from the DUL thread to it and back, so each instance waited for nothing. Here
the thread waits on the queue itself, and the DUL wakes it (:meth:`PromptDIMSE.wake`) when the
peer's release or abort arrives, when the DUL is killed and when it ends. Its timers (the
network timeout) are looked at after :data:`~gateway.netdicom.prompt_dul.WAIT_SECONDS` at the
latest.

Only acceptors get it: a requestor's user pauses that thread for every request it sends, and a
thread in a longer wait would only be slower to pause.
"""

from __future__ import annotations

import queue
from typing import Any

from gateway.netdicom.prompt_dul import WAIT_SECONDS
from gateway.netdicom.store_dimse import StoreDIMSE

#: Put on the DIMSE message queue to end the association thread's wait without a message.
#: Made at run time so that it is not the same object as any ``(None, None)`` constant,
#: such as what pynetdicom returns when its own wait times out.
_WAKE: tuple[None, None] = tuple([None, None])  # type: ignore[assignment]


class PromptDIMSE(StoreDIMSE):
    """The association thread waits on the message queue instead of sleeping (and C-STORE
    responses are encoded directly: gateway/netdicom/store_messages.py)."""

    def wake(self) -> None:
        self.msg_queue.put(_WAKE)

    def get_msg(self, block: bool = False) -> Any:
        if block:
            while True:
                message = super().get_msg(block=True)
                if message is not _WAKE:
                    return message
        # pynetdicom's reactor asks without blocking, once per loop; waiting here (bounded)
        # hands it a message as soon as the DUL thread has decoded one.
        try:
            return self.msg_queue.get(timeout=WAIT_SECONDS)
        except queue.Empty:
            return None, None
