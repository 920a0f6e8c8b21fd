"""Collect the events the gateway publishes, from synchronous test code.

:class:`EventCollector` binds its own exclusive queue to the gateway's exchange and gathers
every message routed to it. aio-pika is asynchronous, so the collector runs a private event loop
on a thread of its own and the test thread waits on a condition variable.

To show that nothing more was published, wait for a state of the gateway that says it has
nothing more to publish (its journal empty, say), then call
:meth:`~MessageBuffer.assert_no_more`: it proves the absence without waiting out a window.
:meth:`~MessageBuffer.assert_quiet` is for what only a window can show.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    ExchangeType,
)

T = TypeVar("T")

GATEWAY_EXCHANGE = "dicom-gateway"
#: The message id of :meth:`EventCollector.catch_up`'s markers (no event id looks like it).
_MARKER_PREFIX = "tests-collector-marker-"


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as it arrived: its body and the AMQP properties the tests look at."""

    body: bytes
    routing_key: str | None
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    message_id: str | None = None
    delivery_mode: int | None = None


def current_test_name() -> str:
    """The running test's node id as pytest publishes it, for naming connections."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "tests")
    return current.rsplit(" ", 1)[0]  # drop the " (setup)" / " (call)" phase


class MessageBuffer(ABC):
    """Messages gathered by a collector's own thread, waited for by the test thread."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._messages: list[ReceivedMessage] = []
        self._arrived = threading.Condition()
        self._seen = 0  # how many messages wait_for has handed out

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Everything received so far, in arrival order."""
        with self._arrived:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[ReceivedMessage]:
        """Wait until at least ``count`` messages have arrived; return all received so far.

        Raises :class:`AssertionError` listing what did arrive if ``timeout`` passes first.
        """
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} message(s) on {self.description} within "
                        f"{timeout:g} s, got {len(self._messages)}: {_describe(self._messages)}"
                    )
                self._arrived.wait(remaining)
            self._seen = len(self._messages)
            return list(self._messages)

    def assert_quiet(self, seconds: float) -> None:
        """Assert that no message beyond those returned by :meth:`wait_for` arrives in ``seconds``.

        Without an earlier :meth:`wait_for` that means no message at all.
        """
        deadline = time.monotonic() + seconds
        with self._arrived:
            while len(self._messages) == self._seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._arrived.wait(remaining)
            extra = self._messages[self._seen :]
        raise AssertionError(
            f"expected no further message on {self.description}, got {len(extra)}: "
            f"{_describe(extra)}"
        )

    def assert_no_more(self, timeout: float = 10.0) -> None:
        """Assert that no message beyond those returned by :meth:`wait_for` has arrived, once
        everything that reached the bus before this call has been delivered here.

        This is no time window: call it when the gateway's own state shows that it has
        published all it ever will for what the test did (its journal and outbox empty, the
        service stopped with its queue empty), and a message published before that state was
        reached is still caught, however late it would have been delivered.
        """
        self.catch_up(timeout)
        with self._arrived:
            extra = self._messages[self._seen :]
        if extra:
            raise AssertionError(
                f"expected no further message on {self.description}, got {len(extra)}: "
                f"{_describe(extra)}"
            )

    @abstractmethod
    def catch_up(self, timeout: float) -> None:
        """Return once every message the bus took before the call has been delivered here."""

    def add(self, message: ReceivedMessage) -> None:
        with self._arrived:
            self._messages.append(message)
            self._arrived.notify_all()


class EventCollector(MessageBuffer):
    """Declare ``exchange`` (topic, durable, as the gateway does) and collect what it routes.

    The queue is server-named, exclusive and auto-deleted, bound with each of ``binding_keys``;
    it exists from ``__enter__`` on, so start the collector before the action under test. The
    AMQP connection is named after the test (``connection_name`` client property), which shows
    in the RabbitMQ management UI and ``rabbitmqctl list_connections client_properties``.

    :meth:`catch_up` sends a marker straight to the queue (through the default exchange) and
    waits for it: a queue delivers in order, so whatever RabbitMQ had routed to the queue before
    (every publish it has confirmed, for one) arrives first. Markers are not collected.
    """

    def __init__(
        self,
        amqp_url: str,
        exchange: str = GATEWAY_EXCHANGE,
        binding_keys: Sequence[str] = ("#",),
        connection_name: str | None = None,
        operation_timeout: float = 15.0,
    ) -> None:
        super().__init__(f"{exchange!r} {list(binding_keys)}")
        self.amqp_url = amqp_url
        self.exchange_name = exchange
        self.binding_keys = tuple(binding_keys)
        self.connection_name = connection_name or current_test_name()
        self.operation_timeout = operation_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="event-collector", daemon=True
        )
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._markers_seen: set[str] = set()

    def __enter__(self) -> EventCollector:
        self._thread.start()
        try:
            self._run(self._open())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._run(self._close())
        finally:
            self._stop_loop()

    @property
    def queue_name(self) -> str:
        if self._queue is None:
            raise RuntimeError("the collector is not open")
        return self._queue.name

    def catch_up(self, timeout: float) -> None:
        marker = f"{_MARKER_PREFIX}{uuid.uuid4().hex}"
        self._run(self._send_marker(marker))
        deadline = time.monotonic() + timeout
        with self._arrived:
            while marker not in self._markers_seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"the collector's own marker did not come back within {timeout:g} s"
                    )
                self._arrived.wait(remaining)
            self._markers_seen.discard(marker)

    # --- the loop thread's side ----------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(self.operation_timeout)

    async def _open(self) -> None:
        self._connection = await aio_pika.connect(
            self.amqp_url,
            client_properties={"connection_name": self.connection_name},
            timeout=self.operation_timeout,
        )
        channel = self._channel = await self._connection.channel()
        exchange: AbstractExchange = await channel.declare_exchange(
            self.exchange_name, ExchangeType.TOPIC, durable=True
        )
        self._queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self.binding_keys:
            await self._queue.bind(exchange, routing_key=key)
        await self._queue.consume(self._on_message, no_ack=True)

    async def _send_marker(self, marker: str) -> None:
        if self._channel is None or self._queue is None:
            raise RuntimeError("the collector is not open")
        await self._channel.default_exchange.publish(
            aio_pika.Message(b"", message_id=marker), routing_key=self._queue.name
        )

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if message.message_id is not None and message.message_id.startswith(_MARKER_PREFIX):
            with self._arrived:
                self._markers_seen.add(message.message_id)
                self._arrived.notify_all()
            return
        received = ReceivedMessage(
            body=message.body,
            routing_key=message.routing_key,
            headers=dict(message.headers),
            content_type=message.content_type,
            message_id=message.message_id,
            delivery_mode=int(message.delivery_mode) if message.delivery_mode else None,
        )
        self.add(received)

    async def _close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def _describe(messages: Sequence[ReceivedMessage]) -> str:
    return "; ".join(f"[{m.routing_key}] {m.body[:200]!r}" for m in messages) or "nothing"
