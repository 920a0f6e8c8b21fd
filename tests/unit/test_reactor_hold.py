"""A requestor's reactor held across a run of requests: paused throughout, let go after, and
a peer's abort still seen between two requests. Real pynetdicom associations over loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import evt

from gateway.dicom_status import Status
from gateway.netdicom.ae import PromptAE
from gateway.netdicom.association import has_ended
from gateway.netdicom.reactor_hold import HoldableCheckpoint, requests_in_a_row
from gateway_client.testing import wait_until
from tests.support import loopback
from tests.support.factories import ct_series


@pytest.fixture
def acceptor() -> Iterator[int]:
    """An acceptor that stores CT and aborts the association on its third C-STORE."""
    stores: list[str] = []

    def on_store(event: evt.Event) -> int:
        stores.append(event.assoc.name)
        if len(stores) == 3:
            event.assoc.abort()
        return Status.SUCCESS

    handlers = [(evt.EVT_C_ECHO, lambda _event: Status.SUCCESS), (evt.EVT_C_STORE, on_store)]
    with loopback.acceptor(handlers) as server:
        yield server.server_address[1]


def _requestor() -> PromptAE:
    return loopback.requestor(PromptAE())


def test_a_held_checkpoint_opens_only_when_the_hold_ends() -> None:
    checkpoint = HoldableCheckpoint()
    assert checkpoint.is_set()  # open, as pynetdicom makes it
    checkpoint.clear()
    checkpoint.held = True
    checkpoint.set()  # what pynetdicom does at the end of each request
    assert not checkpoint.is_set()
    checkpoint.release_hold()
    assert checkpoint.is_set()
    assert not checkpoint.held


def test_once_cleared_the_reactor_does_not_pass_again_until_opened() -> None:
    """pynetdicom's reactor loop: raise the paused flag, wait at the checkpoint, lower it, look
    for a message. A ``clear()`` that returned while the reactor could still run one more loop
    let it take the response to the request sent next."""
    passes = 0
    stop = threading.Event()

    def reactor_loop() -> None:
        nonlocal passes
        while not stop.is_set():
            checkpoint.wait()
            passes += 1  # where pynetdicom's reactor takes a message off the queue

    reactor = threading.Thread(target=reactor_loop)
    checkpoint = HoldableCheckpoint(reactor=reactor)
    reactor.start()
    for _ in range(300):
        checkpoint.clear()
        seen = passes
        time.sleep(0.0005)  # the window in which the request goes out and its response arrives
        assert passes == seen, "the reactor passed a checkpoint that had been cleared"
        checkpoint.set()
    stop.set()
    reactor.join(5)
    assert not reactor.is_alive()


def test_a_clear_does_not_wait_for_a_reactor_that_has_ended() -> None:
    reactor = threading.Thread(target=lambda: None)
    reactor.start()
    reactor.join()
    checkpoint = HoldableCheckpoint(reactor=reactor)
    checkpoint.clear()  # returns: nothing will ever block at it
    assert not checkpoint.is_set()


def test_the_reactor_stays_paused_between_requests_and_runs_again_after(acceptor: int) -> None:
    assoc = _requestor().associate("127.0.0.1", acceptor, ae_title="ACCEPTOR")
    assert assoc.is_established
    checkpoint = assoc._reactor_checkpoint
    assert isinstance(checkpoint, HoldableCheckpoint)
    with requests_in_a_row(assoc):
        for _ in range(5):
            assert int(assoc.send_c_echo().Status) == Status.SUCCESS
            assert assoc._is_paused
            assert not checkpoint.is_set()
    assert checkpoint.is_set()
    wait_until(lambda: not assoc._is_paused, 5, "the reactor running again")
    assoc.release()
    assert assoc.is_released


def test_a_peer_abort_between_requests_is_seen_while_held(acceptor: int, tmp_path: Path) -> None:
    instances = ct_series(tmp_path, 4, rows=64, cols=64)
    assoc = _requestor().associate("127.0.0.1", acceptor, ae_title="ACCEPTOR")
    assert assoc.is_established
    with requests_in_a_row(assoc):
        for instance in instances[:2]:
            assert int(assoc.send_c_store(instance.path).Status) == Status.SUCCESS
            assert not has_ended(assoc)
        assoc.send_c_store(instances[2].path)  # the acceptor aborts in its handler
        wait_until(lambda: has_ended(assoc), 5, "the abort seen by the held association")
        assert assoc.is_established  # the reactor, held, has not looked yet
    wait_until(lambda: not assoc.is_established, 5, "the reactor handling the abort")
    assert assoc.is_aborted
