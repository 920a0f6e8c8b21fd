"""The prompt DUL keeps pynetdicom's behaviour where it waits instead of polling: its wake-up
pipe, and the network timer that only the peer's data restarts."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

from gateway.netdicom.ae import make_prompt
from gateway.netdicom.wakeups import Waker


def test_a_wake_up_after_close_writes_nowhere() -> None:
    """The pipe's numbers may already belong to another connection by then."""
    waker = Waker()
    waker.wake()
    waker.wake()
    waker.drain()
    waker.close()
    reused_read, reused_write = os.pipe()
    try:
        waker.wake()
        os.set_blocking(reused_read, False)
        with pytest.raises(BlockingIOError):
            os.read(reused_read, 1)
    finally:
        os.close(reused_read)
        os.close(reused_write)


def _read_until_closed(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the test closes the other end
        while connection.recv(65536):
            pass


def test_our_own_sends_do_not_restart_the_network_timer() -> None:
    """As in pynetdicom, only the peer's data counts as activity: a peer that stays silent
    while we send is timed out. (A DUL in state 6, data transfer, on a socket pair.)"""
    ours, peer = socket.socketpair()
    assoc = Association(AE(), MODE_ACCEPTOR)
    assoc.set_socket(AssociationSocket(assoc, client_socket=ours))
    make_prompt(assoc)
    assoc.network_timeout = 0.3
    dul = assoc.dul
    assert dul.event_queue.get_nowait() == "Evt5"  # the accepted connection
    dul.state_machine.current_state = "Sta6"
    drain = threading.Thread(target=_read_until_closed, args=(peer,), daemon=True)
    drain.start()
    dul.start()
    try:
        for _ in range(8):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((1, b"\x03" + b"x" * 10))
            dul.send_pdu(pdata)
            time.sleep(0.1)  # the point of the test: time passes while only we send
        assert dul.idle_timer_expired()
    finally:
        dul.kill_dul()
        dul.join(5)
        ours.close()
        drain.join(5)
        peer.close()
