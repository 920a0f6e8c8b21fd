"""The two event buses a pipeline can sit on, behind one small interface.

:class:`AmqpTransport` is RabbitMQ (``[broker] url`` set): one robust connection, so a
pipeline's consumers come back by themselves after a broker restart, and publishes through
:class:`gateway.broker.AmqpPublisher` (publisher confirms; ``mandatory``, so a request nobody
consumes is an error rather than a silent drop). :class:`LocalTransport` is the gateway's local
event log (``[broker] url`` empty), polled.

A consumer's topology, on either bus:

- RabbitMQ: a durable quorum queue named after the consumer, bound to the consumer's binding
  key; what the consumer rejects goes to the quorum queue ``<consumer>.dead-letter``. A queue
  keeps the bindings it was ever given, so a consumer that changes pipelines should be deleted
  first.
- Local event log: a subscription named after the consumer. It starts at the beginning of the
  log, so a new consumer also sees the associations released before it first subscribed.

Replies (export completions) are listened for on a key of their own before the request is
published: an exclusive queue on RabbitMQ, the log from its current end locally.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from gateway.amqp_connect import connect_robust
from gateway.broker import AmqpPublisher
from gateway.bus import (
    AmqpDelivery,
    Delivery,
    LocalDelivery,
    LocalPublisher,
    declare_durable_queue,
    open_event_log,
)
from gateway.errors import BrokerUnavailable, ConfigError
from gateway.eventlog import Claimed, EventLog
from gateway.settings import BrokerSettings

log = logging.getLogger(__name__)

#: How often the local event log is looked at while a consumer or a reply waits.
LOCAL_POLL_SECONDS: Final = 0.1

T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """A message that arrived on a reply key."""

    routing_key: str
    body: bytes
    content_type: str | None
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Taken:
    """A message taken from a consumer's queue, and whether it was delivered before."""

    delivery: Delivery
    redelivered: bool


class Inbox(Protocol):
    """The messages of one consumer."""

    async def take(self) -> Taken:
        """Wait for the next message; it stays the consumer's until it is settled."""

    async def close(self) -> None:
        """Stop consuming; what was taken and not settled is delivered again later."""


class ReplyListener(Protocol):
    """Messages published with one routing key from the moment the listener was opened."""

    async def receive(self) -> Reply:
        """Wait for the next one."""

    async def close(self) -> None: ...


class Transport(Protocol):
    async def open(self) -> None:
        """Connect; :class:`BrokerUnavailable` if the bus cannot be reached."""

    async def consume(self, consumer: str, binding: str, prefetch: int) -> Inbox:
        """Declare the consumer's queue (or subscription), bind it, and start consuming."""

    async def listen(self, routing_key: str) -> ReplyListener: ...

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, content_type: str
    ) -> None:
        """Publish durably; returns once the bus has it."""

    async def close(self) -> None: ...


# --- RabbitMQ -------------------------------------------------------------------------------


@asynccontextmanager
async def _amqp_errors(doing: str) -> AsyncIterator[None]:
    """Convert aio-pika's errors to the gateway's, once, at this boundary."""
    try:
        yield
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        # Not worth retrying: a queue or exchange of that name exists with other arguments.
        raise ConfigError(f"{doing}: RabbitMQ refused the declaration: {exc}") from exc
    except (
        aiormq.exceptions.AMQPError,
        # A RuntimeError, not an AMQPError: the channel closed under us (connection lost).
        aiormq.exceptions.ChannelInvalidStateError,
        OSError,
        TimeoutError,
    ) as exc:
        raise BrokerUnavailable(f"{doing}: {exc}") from exc


class AmqpClientDelivery(AmqpDelivery):
    """A consumer's message. Settling it after its channel is gone (the connection broke, the
    subscription was closed) raises :class:`BrokerUnavailable`; it is then delivered again."""

    async def ack(self) -> None:
        async with _amqp_errors("acknowledging a message"):
            await super().ack()

    async def requeue(self, delay_seconds: float) -> None:
        async with _amqp_errors("requeueing a message"):
            await super().requeue(delay_seconds)

    async def dead_letter(self, reason: str) -> None:
        async with _amqp_errors("rejecting a message"):
            await super().dead_letter(reason)


class AmqpInbox:
    def __init__(self, channel: AbstractChannel, queue: AbstractQueue) -> None:
        self._channel = channel
        self._queue = queue
        self._messages: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._tag: str | None = None

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._messages.put)

    async def take(self) -> Taken:
        message = await self._messages.get()
        return Taken(AmqpClientDelivery(message), bool(message.redelivered))

    async def close(self) -> None:
        # Closing the channel hands whatever it holds unsettled back to the queue.
        async with _amqp_errors(f"closing consumer {self._queue.name}"):
            if self._tag is not None and not self._channel.is_closed:
                await self._queue.cancel(self._tag)
            await self._channel.close()


class AmqpReplyListener:
    def __init__(self, queue: AbstractQueue) -> None:
        self._queue = queue
        self._replies: asyncio.Queue[Reply] = asyncio.Queue()
        self._tag: str | None = None

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await self._replies.put(
            Reply(
                routing_key=message.routing_key or "",
                body=message.body,
                content_type=message.content_type,
                headers=dict(message.headers or {}),
            )
        )

    async def receive(self) -> Reply:
        return await self._replies.get()

    async def close(self) -> None:
        # The queue is exclusive and auto-delete: without its consumer RabbitMQ removes it.
        if self._tag is not None:
            async with _amqp_errors(f"closing reply queue {self._queue.name}"):
                await self._queue.cancel(self._tag)
            self._tag = None


class AmqpTransport:
    def __init__(self, url: str, exchange: str, connection_name: str) -> None:
        self._url = url
        self._exchange_name = exchange
        self._connection_name = connection_name
        self._publisher = AmqpPublisher(url, exchange, f"{connection_name} publisher")
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def open(self) -> None:
        self._connection = await connect_robust(self._url, self._connection_name)
        async with _amqp_errors("connecting to RabbitMQ"):
            self._channel = await self._connection.channel()
            self._exchange = await self._declare_exchange(self._channel)

    async def _declare_exchange(self, channel: AbstractChannel) -> AbstractExchange:
        # The gateway declares it too; whoever comes first creates it, with the same arguments.
        return await channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )

    def _open(self) -> tuple[AbstractRobustConnection, AbstractChannel, AbstractExchange]:
        if self._connection is None or self._channel is None or self._exchange is None:
            raise RuntimeError("the transport is not open")
        return self._connection, self._channel, self._exchange

    async def consume(self, consumer: str, binding: str, prefetch: int) -> Inbox:
        connection, _, _ = self._open()
        async with _amqp_errors(f"subscribing {consumer}"):
            # A channel per consumer: the prefetch limit is per channel.
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=prefetch)
            exchange = await self._declare_exchange(channel)
            queue = await declare_durable_queue(channel, consumer)
            await queue.bind(exchange, binding)
            inbox = AmqpInbox(channel, queue)
            await inbox.start()
        return inbox

    async def listen(self, routing_key: str) -> ReplyListener:
        _, channel, exchange = self._open()
        async with _amqp_errors(f"listening on {routing_key}"):
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange, routing_key)
            listener = AmqpReplyListener(queue)
            await listener.start()
        return listener

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, content_type: str
    ) -> None:
        await self._publisher.publish(
            routing_key, body, message_id=message_id, content_type=content_type
        )

    async def close(self) -> None:
        await self._publisher.close()
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None and not connection.is_closed:
            async with _amqp_errors("closing the RabbitMQ connection"):
                await connection.close()


# --- the local event log --------------------------------------------------------------------


async def _poll(look: Callable[[], Awaitable[T | None]]) -> T:
    """Call ``look`` until it finds something; the caller bounds the wait with a timeout."""
    while (found := await look()) is None:
        await asyncio.sleep(LOCAL_POLL_SECONDS)
    return found


class LocalInbox:
    def __init__(self, log: EventLog, consumer: str, prefetch: int) -> None:
        self._log = log
        self._consumer = consumer
        self._prefetch = prefetch
        self._taken: list[Taken] = []
        self._claiming: asyncio.Task[list[Claimed]] | None = None

    async def take(self) -> Taken:
        return await _poll(self._next)

    async def _next(self) -> Taken | None:
        if not self._taken:
            await self._collect()
        return self._taken.pop(0) if self._taken else None

    async def _collect(self) -> None:
        # A claim cannot be taken back once its thread runs: when the caller's timeout cancels
        # the wait, the claim finishes anyway and its events are collected by the next call.
        if self._claiming is None:
            self._claiming = asyncio.ensure_future(
                asyncio.to_thread(self._log.claim, self._consumer, self._prefetch)
            )
        claimed = await asyncio.shield(self._claiming)
        self._claiming = None
        self._taken += [
            Taken(LocalDelivery(self._log, self._consumer, c.event), c.attempts > 1)
            for c in claimed
        ]

    async def close(self) -> None:
        # Claimed but never handed out: give them back now rather than at the next subscribe.
        if self._claiming is not None:
            await self._collect()
        for taken in self._taken:
            await taken.delivery.requeue(0)
        self._taken = []


class LocalReplyListener:
    def __init__(self, log: EventLog, routing_key: str, after: int) -> None:
        self._log = log
        self._routing_key = routing_key
        self._after = after
        self._pending: list[Reply] = []

    async def receive(self) -> Reply:
        return await _poll(self._next)

    async def _next(self) -> Reply | None:
        if not self._pending:
            for event in await asyncio.to_thread(self._log.read, self._after):
                self._after = event.seq
                if event.routing_key == self._routing_key:
                    self._pending.append(
                        Reply(event.routing_key, event.body, event.content_type, event.headers)
                    )
        return self._pending.pop(0) if self._pending else None

    async def close(self) -> None:
        """Nothing to release: the log is read, not subscribed to."""


class LocalTransport:
    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        self._log: EventLog | None = None

    async def open(self) -> None:
        self._log = await asyncio.to_thread(open_event_log, self._settings)

    def _open(self) -> EventLog:
        if self._log is None:
            raise RuntimeError("the transport is not open")
        return self._log

    async def consume(self, consumer: str, binding: str, prefetch: int) -> Inbox:
        event_log = self._open()
        await asyncio.to_thread(event_log.subscribe, consumer, binding)
        return LocalInbox(event_log, consumer, prefetch)

    async def listen(self, routing_key: str) -> ReplyListener:
        event_log = self._open()
        return LocalReplyListener(
            event_log, routing_key, await asyncio.to_thread(event_log.last_seq)
        )

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, content_type: str
    ) -> None:
        await LocalPublisher(self._open()).publish(
            routing_key, body, message_id=message_id, content_type=content_type
        )

    async def close(self) -> None:
        event_log, self._log = self._log, None
        if event_log is not None:
            await asyncio.to_thread(event_log.close)


def open_transport(settings: BrokerSettings, connection_name: str) -> Transport:
    """The transport for the configured bus (not yet open)."""
    if settings.embedded:
        return LocalTransport(settings)
    return AmqpTransport(settings.url, settings.exchange, connection_name)
