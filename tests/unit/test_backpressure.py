"""The bounded provider queue makes a producer wait for the consumer, never for a dead one, and
replaces only an empty queue. (That an established association sends through it:
test_prompt_ae.py.)"""

from __future__ import annotations

import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom._globals import MODE_REQUESTOR
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ABORT

from gateway.netdicom import backpressure
from gateway.netdicom.backpressure import BoundedProviderQueue


class Worker:
    def __init__(self, alive: bool) -> None:
        self.alive = alive

    def is_alive(self) -> bool:
        return self.alive


def test_put_waits_while_full_until_the_consumer_takes() -> None:
    q = BoundedProviderQueue(Worker(alive=True), limit=2)
    q.put(1)
    q.put(2)
    done = threading.Event()

    def produce() -> None:
        q.put(3)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert not done.wait(0.3), "the third put went through while two items were waiting"
    assert q.get() == 1
    assert done.wait(2), "the put did not resume after an item was taken"
    producer.join()
    assert [q.get(), q.get()] == [2, 3]


def test_put_never_waits_on_a_dead_consumer() -> None:
    q = BoundedProviderQueue(Worker(alive=False), limit=1)
    started = time.monotonic()
    for item in range(5):
        q.put(item)
    assert time.monotonic() - started < 0.5
    assert q.qsize() == 5


def test_a_queue_that_holds_primitives_is_not_replaced() -> None:
    assoc = Association(AE(), MODE_REQUESTOR)
    assoc.dul.to_provider_queue.put(A_ABORT())
    with pytest.raises(backpressure.NotBounded):
        backpressure.install(assoc)
    assert not isinstance(assoc.dul.to_provider_queue, BoundedProviderQueue)
