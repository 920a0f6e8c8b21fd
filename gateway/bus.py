"""The event bus seen by the services: RabbitMQ when ``[broker] url`` is set, else the local
event log. Both give the same guarantees: a publish returns once the event is durable, and a
consumed message is settled explicitly (ack, requeue, or dead-letter).

The RabbitMQ side is :mod:`gateway.broker` (aio-pika); :func:`gateway.backends.open_publisher`
opens the publisher the settings choose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from gateway.eventlog import EventLog, LoggedEvent
from gateway.settings import BrokerSettings

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

#: How long a publish waits for the bus to confirm it before it counts as failed.
CONFIRM_TIMEOUT_SECONDS = 30.0


class Publisher(Protocol):
    async def ensure_ready(self) -> None:
        """Connect now (start-up); raises BrokerUnavailable if the bus cannot be reached."""

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, content_type: str
    ) -> None:
        """Publish persistently and return once the broker confirmed it.

        Raises BrokerUnavailable (not confirmed: retry), EventRefused (this message refused,
        others may pass) or EventUnroutable (confirmed, but no queue would receive it).
        """

    async def close(self) -> None: ...


class Delivery(Protocol):
    """One consumed message, whichever bus it came from."""

    @property
    def body(self) -> bytes: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def message_id(self) -> str | None: ...

    async def ack(self) -> None: ...

    async def requeue(self, delay_seconds: float) -> None:
        """Give it back to be delivered again, not before ``delay_seconds``."""

    async def dead_letter(self, reason: str) -> None: ...


class AmqpDelivery:
    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message
        self.body = message.body
        self.content_type = message.content_type
        self.headers: Mapping[str, Any] = dict(message.headers or {})
        self.message_id = message.message_id

    async def ack(self) -> None:
        await self._message.ack()

    async def requeue(self, delay_seconds: float) -> None:
        # RabbitMQ has no delayed requeue: hold the message (it counts against the prefetch,
        # so this also slows the consumer down) and then put it back.
        await asyncio.sleep(delay_seconds)
        await self._message.nack(requeue=True)

    async def dead_letter(self, reason: str) -> None:
        # The queue's dead-letter arguments route it; the reason is in the consumer's log.
        await self._message.reject(requeue=False)


class LocalDelivery:
    def __init__(self, log: EventLog, subscription: str, event: LoggedEvent) -> None:
        self._log = log
        self._subscription = subscription
        self._seq = event.seq
        self.body = event.body
        self.content_type = event.content_type
        self.headers: Mapping[str, Any] = event.headers
        self.message_id: str | None = event.message_id

    async def ack(self) -> None:
        await asyncio.to_thread(self._log.ack, self._subscription, self._seq)

    async def requeue(self, delay_seconds: float) -> None:
        await asyncio.to_thread(self._log.requeue, self._subscription, self._seq, delay_seconds)

    async def dead_letter(self, reason: str) -> None:
        await asyncio.to_thread(self._log.dead_letter, self._subscription, self._seq, reason)


class LocalPublisher:
    """:class:`Publisher` onto the local event log.

    Nothing is ever unroutable here: the log itself keeps every event for ``events`` to read.
    """

    def __init__(self, log: EventLog) -> None:
        self._log = log

    async def ensure_ready(self) -> None:
        await asyncio.to_thread(self._log.last_seq)

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, content_type: str
    ) -> None:
        await asyncio.to_thread(
            self._log.append,
            routing_key,
            body,
            message_id=message_id,
            content_type=content_type,
        )

    async def close(self) -> None:
        """The log belongs to whoever opened it."""


def dead_letter_queue(queue: str) -> str:
    """Where RabbitMQ puts what is rejected from ``queue``."""
    return f"{queue}.dead-letter"


async def declare_durable_queue(channel: AbstractChannel, name: str) -> AbstractQueue:
    """A durable quorum queue whose rejected messages go to its :func:`dead_letter_queue`.

    Quorum queues are replicated and keep messages across broker restarts; the dead-letter
    queue keeps what a consumer could not process, for an operator to look at.
    """
    dead_letters = dead_letter_queue(name)
    await channel.declare_queue(dead_letters, durable=True, arguments={"x-queue-type": "quorum"})
    return await channel.declare_queue(
        name,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_letters,
        },
    )


def open_event_log(settings: BrokerSettings) -> EventLog:
    return EventLog.open(
        settings.event_log, retention=timedelta(days=settings.event_log_retention_days)
    )
