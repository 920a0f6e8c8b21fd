"""What ingest's worker processes and their parent say to each other (real socket pairs)."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import WorkerMessageError
from gateway.metrics import IngestMetrics
from gateway.settings import GatewaySettings
from ingest.workers.channel import (
    Channel,
    ForwardedStorage,
    forwarded_counters,
    hand_over,
    receive_connections,
)
from ingest.workers.messages import (
    MAX_LINE_BYTES,
    Aborted,
    Closed,
    CounterMoved,
    Message,
    Ready,
    Released,
    Spooled,
    WorkerStart,
    decode,
    encode,
)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"ready": true}\n', Ready()),
        (b'{"closed": true}\n', Closed()),
        (b'{"spooled": "a-b"}\n', Spooled("a-b")),
        (b'{"released": "a-b"}\n', Released("a-b")),
        (b'{"aborted": "a-b"}\n', Aborted("a-b")),
        (
            b'{"counter": "received_bytes", "labels": ["GATEWAY"], "amount": 512}\n',
            CounterMoved("received_bytes", ("GATEWAY",), 512.0),
        ),
        (
            b'{"counter": "associations_ended", "labels": ["GW", "aborted"], "amount": 1.0}',
            CounterMoved("associations_ended", ("GW", "aborted"), 1.0),
        ),
    ],
)
def test_messages_are_read(line: bytes, message: Message) -> None:
    assert decode(line) == message


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (Ready(), b'{"ready":true}\n'),
        (Closed(), b'{"closed":true}\n'),
        (Spooled("a-b"), b'{"spooled":"a-b"}\n'),
        (Released("a-b"), b'{"released":"a-b"}\n'),
        (Aborted("a-b"), b'{"aborted":"a-b"}\n'),
        (
            CounterMoved("received_bytes", ("GATEWAY",), 512),
            b'{"counter":"received_bytes","labels":["GATEWAY"],"amount":512}\n',
        ),
        (
            CounterMoved("associations_ended", ("GW", "aborted"), 0.5),
            b'{"counter":"associations_ended","labels":["GW","aborted"],"amount":0.5}\n',
        ),
    ],
)
def test_messages_are_written_as_one_line_each_and_read_back(message: Message, line: bytes) -> None:
    assert encode(message) == line
    assert decode(line) == message


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[1, 2]", id="not-an-object"),
        pytest.param(b'{"ready": 1}', id="ready-not-true"),
        pytest.param(b'{"released": ""}', id="empty-id"),
        pytest.param(b'{"released": 7}', id="id-not-text"),
        pytest.param(b'{"spooled": null}', id="spooled-id-null"),
        pytest.param(b'{"aborted": ""}', id="aborted-empty-id"),
        pytest.param(
            b'{"counter": "events_published", "labels": [], "amount": 1}', id="not-a-listener-one"
        ),
        pytest.param(b'{"counter": "__class__", "labels": [], "amount": 1}', id="attribute-name"),
        pytest.param(
            b'{"counter": "received_bytes", "labels": [1], "amount": 1}', id="label-not-text"
        ),
        pytest.param(b'{"counter": "received_bytes", "labels": [], "amount": -1}', id="negative"),
        pytest.param(
            b'{"counter": "received_bytes", "labels": [], "amount": true}', id="boolean-amount"
        ),
        pytest.param(b'{"released": "' + b"x" * MAX_LINE_BYTES + b'"}', id="too-long"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"ready": true, "closed": true}', id="two-kinds"),
        pytest.param(b'{"released": "a-b", "extra": 1}', id="unknown-key"),
        pytest.param(b'{"counter": "received_bytes", "amount": 1}', id="no-labels"),
        pytest.param(
            b'{"counter": "received_bytes", "labels": "GW", "amount": 1}', id="labels-not-a-list"
        ),
        pytest.param(
            b'{"counter": "received_bytes", "labels": [], "amount": "1"}', id="amount-not-number"
        ),
        pytest.param(b'{"counter": "received_bytes", "labels": [], "amount": NaN}', id="nan"),
    ],
)
def test_anything_else_is_refused(line: bytes) -> None:
    with pytest.raises(WorkerMessageError):
        decode(line)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: Released(""), id="empty-id"),
        pytest.param(lambda: CounterMoved("events_published", (), 1), id="not-a-listener-one"),
        pytest.param(lambda: CounterMoved("received_bytes", (), -1), id="negative"),
        pytest.param(lambda: CounterMoved("received_bytes", (), True), id="boolean-amount"),
    ],
)
def test_a_message_that_the_other_side_would_refuse_cannot_be_built(
    build: Callable[[], Message],
) -> None:
    with pytest.raises(WorkerMessageError):
        build()


def test_the_start_up_document_carries_the_parents_settings() -> None:
    settings = GatewaySettings.model_validate(
        {"ingest": {"port": 11113, "workers": 2, "ae": [{"ae_title": "GW", "pipeline": "p"}]}}
    )
    start = WorkerStart(settings, "DEBUG", 7)
    assert WorkerStart.decode(start.encode()) == start


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(b'{"settings": {}, "log_level": "INFO"}', id="no-channel"),
        pytest.param(
            b'{"settings": {}, "log_level": "INFO", "channel_fd": 3, "x": 1}', id="unknown-key"
        ),
        pytest.param(b'{"settings": {}, "log_level": 20, "channel_fd": 3}', id="level-not-text"),
        pytest.param(b'{"settings": {}, "log_level": "INFO", "channel_fd": "3"}', id="fd-text"),
        pytest.param(b'{"settings": {}, "log_level": "INFO", "channel_fd": -1}', id="fd-negative"),
        pytest.param(
            b'{"settings": {"ingest": {"port": "x"}}, "log_level": "INFO", "channel_fd": 3}',
            id="invalid-settings",
        ),
    ],
)
def test_a_broken_start_up_document_is_refused(document: bytes) -> None:
    with pytest.raises(WorkerMessageError):
        WorkerStart.decode(document)


def test_forwarded_counts_arrive_as_the_parents_counter_would_take_them() -> None:
    worker_end, parent_end = socket.socketpair()
    with worker_end, parent_end:
        channel = Channel(worker_end)
        counters = forwarded_counters(channel)
        counters.instances_received.labels("GATEWAY").inc()
        counters.received_bytes.labels("GATEWAY").inc(1234)
        storage = ForwardedStorage(channel)
        storage.spooled("assoc-1")
        storage.released("assoc-1")
        storage.aborted("assoc-2")
        worker_end.shutdown(socket.SHUT_WR)
        lines = parent_end.makefile("rb").readlines()
    messages = [decode(line) for line in lines]
    assert messages == [
        CounterMoved("instances_received", ("GATEWAY",), 1.0),
        CounterMoved("received_bytes", ("GATEWAY",), 1234.0),
        Spooled("assoc-1"),
        Released("assoc-1"),
        Aborted("assoc-2"),
    ]
    # Every listener counter of the parent takes the labels the worker sends.
    parent = IngestMetrics.register(CollectorRegistry()).listener_counters()
    for message in messages:
        if isinstance(message, CounterMoved):
            getattr(parent, message.counter).labels(*message.labels).inc(message.amount)


def test_a_send_after_the_parent_is_gone_is_reported_not_raised() -> None:
    worker_end, parent_end = socket.socketpair()
    parent_end.close()
    with worker_end:
        channel = Channel(worker_end)
        assert not channel.send(Closed())
        assert not channel.send(Closed())  # and stays so, without trying again


def test_connections_are_handed_over_and_usable_on_the_other_side() -> None:
    lost: list[int] = []
    parent_end, worker_end = socket.socketpair()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with accepted:
            hand_over(parent_end, accepted)
        parent_end.close()  # the parent's copy is closed; the worker's stays open
        (received,) = list(receive_connections(worker_end, lost.append))
        with client, received:
            client.sendall(b"ping")
            assert received.recv(4) == b"ping"
            received.sendall(json.dumps({"ok": True}).encode())
            assert client.recv(64) == b'{"ok": true}'
    worker_end.close()
    assert lost == []


def test_a_connection_whose_descriptor_did_not_arrive_is_reported_lost() -> None:
    lost: list[int] = []
    parent_end, worker_end = socket.socketpair()
    with parent_end, worker_end:
        parent_end.sendall(b"c")  # the byte of a hand-over, its descriptor dropped
        parent_end.shutdown(socket.SHUT_WR)
        assert list(receive_connections(worker_end, lost.append)) == []
    assert lost == [1]


def test_a_worker_that_does_not_read_makes_the_hand_over_fail_at_once() -> None:
    parent_end, worker_end = socket.socketpair()
    with parent_end, worker_end, socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        parent_end.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # fill what the worker does not read
            while True:
                parent_end.send(b"x" * 65536)
        parent_end.setblocking(True)  # as the pool's end is: hand_over must not wait anyway
        with client, accepted, pytest.raises(BlockingIOError):
            hand_over(parent_end, accepted)
