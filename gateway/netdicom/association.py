"""What the services ask of an association that pynetdicom's public API does not answer.

Each of these reads or drives pynetdicom's providers (ACSE, DIMSE, DUL) directly; they serve
promises every mode keeps, so plain mode uses them too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.transport import AssociationSocket

from gateway.netdicom.direct_store import StoreReceiver
from gateway.netdicom.prompt_dul import PromptDUL

#: How long a rejection waits for the A-ASSOCIATE-RJ to leave before giving up.
REJECT_SEND_SECONDS = 5.0
#: The request waits for our answer in these states (PS3.8 9.2); any other means it has left.
_AWAITING_ANSWER = frozenset({"Sta2", "Sta3"})


def reject(assoc: Association, result: int, source: int, reason: int) -> None:
    """Reject ``assoc`` from an ``EVT_REQUESTED`` handler, and wait until the rejection is on
    the wire.

    pynetdicom closes the socket as soon as the handler returns, so returning early would drop
    the rejection and the sender would see a bare TCP close instead of the reason.
    """
    assoc.acse.send_reject(result, source, reason)
    deadline = time.monotonic() + REJECT_SEND_SECONDS
    while time.monotonic() < deadline and assoc.dul.state_machine.current_state in _AWAITING_ANSWER:
        time.sleep(0.005)
    assoc.kill()


def is_release_request(event: evt.Event) -> bool:
    """Whether an ``EVT_ACSE_RECV`` event is the peer's A-RELEASE-RQ (not yet answered)."""
    # pynetdicom sets it for this event only, from the keyword it triggers the event with.
    primitive = event.primitive  # type: ignore[attr-defined]
    return isinstance(primitive, A_RELEASE) and primitive.result is None


def discard_partial_data_set(assoc: Association) -> None:
    """Remove the data set pynetdicom was still receiving when the association broke.

    pynetdicom leaves that file behind; the maintenance sweep would find it later, but a
    partial multi-gigabyte transfer should not hold the spool that long.
    """
    message = assoc.dimse.message
    partial = None if message is None else message._data_set_path
    if isinstance(partial, Path):
        partial.unlink(missing_ok=True)


def abort_all(associations: Iterable[Association]) -> None:
    """Abort every association in ``associations`` and return once each connection is closed.

    pynetdicom's blocking abort sleeps 0.1 s after each association it ends, so a service that
    stopped with a hundred connections open (port probes, a flood of garbage) took ten seconds
    to stop. Here every A-ABORT is queued first, then each association is ended as pynetdicom's
    abort ends it: the DUL thread has sent the A-ABORT and gone back to idle, the socket is
    closed.
    """
    ending = list(associations)
    for assoc in ending:
        assoc.abort(block=False)  # queues the A-ABORT and triggers EVT_ABORTED, once only
    for assoc in ending:
        assoc.kill()  # returns once the DUL is idle: the A-ABORT has left
        if isinstance(assoc.dul.socket, AssociationSocket):
            assoc.dul.socket._shutdown_socket()


def has_ended(assoc: Association) -> bool:
    """Whether the requested association ``assoc`` can carry no more requests: what its reactor
    would see, asked while the reactor is held (gateway/netdicom/reactor_hold.py)."""
    return not assoc.is_established or assoc.acse.is_aborted() or not assoc.dul.is_alive()


def was_aborted(assoc: Association) -> bool:
    """Whether ``assoc`` ended by an A-ABORT (or A-P-ABORT), seen or still queued for its
    reactor, rather than by a release or a lost connection."""
    return bool(assoc.is_aborted) or assoc.acse.is_aborted()


def receiving_thread(assoc: Association) -> threading.Thread:
    """The thread that receives ``assoc``'s data sets and writes them to their files.

    pynetdicom decodes each P-DATA-TF on its DUL thread (the state machine's DT-2 hands it to
    the DIMSE provider there), so a chunked data set is written on it; the C-STORE fast path
    (direct_store.py) runs on that thread too.
    """
    return assoc.dul


def abort_as_silent(assoc: Association) -> None:
    """Have ``assoc`` aborted as a peer that fell silent is: its network timeout ends now, and
    its association thread aborts it (A-ABORT, ``EVT_ABORTED``) at its next look.

    Callable from the DUL thread, which cannot abort its own association: pynetdicom's abort
    waits for that thread to stop.
    """
    assoc.network_timeout = 0


def enable_direct_store(assoc: Association, receiver: StoreReceiver) -> bool:
    """Take ``assoc``'s C-STORE requests on the fast path (direct_store.py), giving their data
    sets to ``receiver``; call it before the association is established. False in plain mode,
    where pynetdicom receives everything."""
    dul = assoc.dul
    if not isinstance(dul, PromptDUL):
        return False
    dul.enable_direct_store(receiver)
    return True
