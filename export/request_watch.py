"""What ``dicom-gateway send --wait`` can see of its request while it waits: the completion,
and where the request stands with the export service.

The completion is listened for before the request is published: an exclusive queue bound to
the reply key on RabbitMQ, the local event log from its end. Where the request stands
(:class:`Intake`) is what the bus shows: on the local event log, the export subscription's
delivery of the request (not looked at, taken, put back, dead-lettered); on RabbitMQ, which
does not say who holds a message, the export queue's consumers and the requests waiting in it
(a passive declaration).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Protocol

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from contracts.cloudevent import export_completed_from_event, parse_event
from contracts.errors import InvalidEvent
from contracts.export import ExportCompleted, ExportRequested
from contracts.routing import EXPORT_REQUESTED_ROUTING_KEY
from gateway.amqp_connect import connect
from gateway.bus import open_event_log
from gateway.errors import BrokerUnavailable
from gateway.eventlog import DEAD, READY, SETTLED, TAKEN, UNSEEN, EventLog
from gateway.settings import GatewaySettings

#: How often the local event log is looked at for the completion.
LOCAL_POLL_SECONDS = 0.2


class Intake(StrEnum):
    """Where a request stands with the export service, as far as the bus shows it."""

    #: No export service has looked at it (none is running, or all are busy).
    NOT_TAKEN = "not taken"
    #: An export service attached, the request waits behind others.
    QUEUED = "queued"
    #: An export service has it (or, on RabbitMQ, has taken every request there was).
    TAKEN = "taken"
    #: An export service had it and put it back, to try again later.
    PUT_BACK = "put back"
    #: An export service refused it as invalid: no completion will come.
    REJECTED = "rejected"


def local_intake(state: str, attempts: int) -> Intake:
    """The intake from the export subscription's delivery of the request (local event log)."""
    if state == UNSEEN:
        return Intake.NOT_TAKEN
    if state == READY:
        return Intake.PUT_BACK if attempts > 0 else Intake.QUEUED
    if state == DEAD:
        return Intake.REJECTED
    if state in (TAKEN, SETTLED):
        return Intake.TAKEN
    raise ValueError(f"unknown delivery state {state!r}")


def amqp_intake(consumers: int | None, waiting: int) -> Intake:
    """The intake from the export queue: its consumers (None: no such queue) and the requests
    waiting in it (RabbitMQ)."""
    if not consumers:
        return Intake.NOT_TAKEN
    return Intake.QUEUED if waiting > 0 else Intake.TAKEN


class RequestWatch(Protocol):
    """The completion of one request, and where it stands."""

    async def completion(self, seconds: float) -> ExportCompleted | None:
        """Wait up to ``seconds`` for the completion; None if it has not come."""

    async def intake(self) -> Intake: ...

    async def close(self) -> None: ...


def completion_of(
    request: ExportRequested,
    routing_key: str | None,
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, Any],
) -> ExportCompleted | None:
    """The completion of ``request`` if this message is it, else None."""
    if routing_key != request.reply_routing_key:
        return None
    try:
        completed = export_completed_from_event(
            parse_event(body, content_type=content_type, headers=dict(headers))
        )
    except InvalidEvent:
        return None  # someone else's message on the same key; not ours to judge
    return completed if completed.export_id == request.export_id else None


class LocalWatch:
    def __init__(
        self, event_log: EventLog, request: ExportRequested, subscription: str, after: int
    ) -> None:
        self._log = event_log
        self._request = request
        self._subscription = subscription
        self._after = after
        self._request_seq: int | None = None

    async def completion(self, seconds: float) -> ExportCompleted | None:
        deadline = time.monotonic() + seconds
        while True:
            for event in await asyncio.to_thread(self._log.read, self._after):
                self._after = event.seq
                if (
                    event.routing_key == EXPORT_REQUESTED_ROUTING_KEY
                    and event.message_id == self._request.export_id
                ):
                    self._request_seq = event.seq
                completed = completion_of(
                    self._request, event.routing_key, event.body, event.content_type, event.headers
                )
                if completed is not None:
                    return completed
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(min(LOCAL_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    async def intake(self) -> Intake:
        if self._request_seq is None:  # not read back yet: not looked at either
            return Intake.NOT_TAKEN
        delivery = await asyncio.to_thread(
            self._log.delivery_state, self._subscription, self._request_seq
        )
        return local_intake(delivery.state, delivery.attempts)

    async def close(self) -> None:
        await asyncio.to_thread(self._log.close)


class AmqpWatch:
    def __init__(
        self, connection: AbstractConnection, request: ExportRequested, queue: str
    ) -> None:
        self._connection = connection
        self._request = request
        self._queue = queue
        self._arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def start(self, exchange_name: str) -> None:
        assert self._request.reply_routing_key is not None
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        await replies.bind(exchange, self._request.reply_routing_key)
        await replies.consume(self._arrived.put, no_ack=True)

    async def completion(self, seconds: float) -> ExportCompleted | None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(self._arrived.get(), left)
            except TimeoutError:
                return None
            completed = completion_of(
                self._request,
                message.routing_key,
                message.body,
                message.content_type,
                dict(message.headers or {}),
            )
            if completed is not None:
                return completed
        return None

    async def intake(self) -> Intake:
        # A channel of its own: declaring a queue that does not exist closes the channel.
        try:
            async with self._connection.channel() as channel:
                queue = await channel.declare_queue(self._queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return amqp_intake(None, 0)
        except (aiormq.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"looking at queue {self._queue}: {exc}") from exc
        declared = queue.declaration_result
        return amqp_intake(declared.consumer_count or 0, declared.message_count or 0)

    async def close(self) -> None:
        await self._connection.close()


async def open_watch(settings: GatewaySettings, request: ExportRequested) -> RequestWatch:
    """Start listening for the completion of ``request``, before it is published."""
    if settings.broker.embedded:
        event_log = await asyncio.to_thread(open_event_log, settings.broker)
        after = await asyncio.to_thread(event_log.last_seq)
        return LocalWatch(event_log, request, settings.export.queue, after)
    connection = await connect(settings.broker.url, "dicom-gateway send --wait")
    watch = AmqpWatch(connection, request, settings.export.queue)
    try:
        await watch.start(settings.broker.exchange)
    except (aiormq.exceptions.AMQPError, OSError) as exc:
        await connection.close()
        raise BrokerUnavailable(f"listening for the completion: {exc}") from exc
    return watch
