"""Where export requests come from when RabbitMQ is configured: a queue.

Topology (declared at start-up, idempotently): the durable topic exchange, a durable quorum
queue ``export.queue`` bound to ``export.requested`` whose rejected messages go to the quorum
queue ``<queue>.dead-letter`` through the default exchange. The broker enforces the prefetch.

On the local event log requests come from :mod:`export.local_intake` instead; export imports
this module (and aio-pika with it) only for RabbitMQ.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    ConsumerTag,
)

from contracts.routing import EXPORT_REQUESTED_ROUTING_KEY
from export.consumer import CONSUMING, ExportConsumer
from gateway.amqp_connect import connect_robust
from gateway.bus import AmqpDelivery, declare_durable_queue
from gateway.errors import BrokerUnavailable
from gateway.settings import GatewaySettings
from gateway.stop_signals import stopped_within

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0)
#: How often the queue's binding is declared again. Whoever deletes and re-declares the
#: exchange (another service's start-up, an operator) drops the binding without a word to
#: this consumer, and RabbitMQ then drops every request published meanwhile; AMQP cannot ask
#: whether a binding exists, so it is made to exist again (idempotently) this often.
REBIND_SECONDS = 5.0
#: How long stopping waits for the broker to confirm that no more requests come.
CANCEL_TIMEOUT_SECONDS = 5.0


async def consume_amqp(
    settings: GatewaySettings, consumer: ExportConsumer, stop: asyncio.Event
) -> None:
    """Consume until ``stop`` is set, reconnecting while the broker is away."""
    attempt = 0
    while not stop.is_set():
        try:
            connection = await connect_robust(
                settings.broker.url, f"{settings.export.queue} consumer"
            )
        except BrokerUnavailable as exc:
            delay = RECONNECT_BACKOFF_SECONDS[min(attempt, len(RECONNECT_BACKOFF_SECONDS) - 1)]
            log.warning("%s; retrying in %.0f s", exc, delay)
            attempt += 1
            if await stopped_within(stop, delay):
                return
            continue
        async with connection:
            await _consume_amqp(settings, connection, consumer, stop)
        return


async def _consume_amqp(
    settings: GatewaySettings,
    connection: AbstractRobustConnection,
    consumer: ExportConsumer,
    stop: asyncio.Event,
) -> None:
    export = settings.export
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=export.prefetch)
    exchange = await channel.declare_exchange(
        settings.broker.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await declare_durable_queue(channel, export.queue)
    await queue.bind(exchange, EXPORT_REQUESTED_ROUTING_KEY)

    async def on_message(message: AbstractIncomingMessage) -> None:
        await consumer.handle(AmqpDelivery(message))

    tag = await queue.consume(on_message)
    binding = _Binding()

    def readiness() -> str | None:
        if not connection.connected.is_set():
            return "connection to RabbitMQ lost"
        return binding.problem

    consumer.attach(readiness)
    rebinding = asyncio.create_task(_keep_bound(settings, connection, binding, stop))
    log.info(
        "%s %s on RabbitMQ (prefetch %d, at most %d associations)",
        CONSUMING,
        export.queue,
        export.prefetch,
        export.max_associations,
    )
    await stop.wait()
    await rebinding
    consumer.detach()
    await _stop_consuming(connection, queue, tag)
    await consumer.finish()


@dataclass
class _Binding:
    """What the last attempt to declare the queue's binding found (None: it is in place)."""

    problem: str | None = None


async def _keep_bound(
    settings: GatewaySettings,
    connection: AbstractRobustConnection,
    binding: _Binding,
    stop: asyncio.Event,
) -> None:
    """Declare the exchange and the queue's binding again every :data:`REBIND_SECONDS`, on a
    channel of its own (a refused declaration closes its channel), until ``stop``."""
    exchange_name, queue_name = settings.broker.exchange, settings.export.queue
    while not await stopped_within(stop, REBIND_SECONDS):
        if not connection.connected.is_set():
            continue  # the robust connection restores the binding with its channel
        try:
            async with asyncio.timeout(REBIND_SECONDS), connection.channel() as channel:
                exchange = await channel.declare_exchange(
                    exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                )
                queue = await declare_durable_queue(channel, queue_name)
                await queue.bind(exchange, EXPORT_REQUESTED_ROUTING_KEY)
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException, OSError) as exc:
            if binding.problem is None:
                log.error(
                    "cannot bind %s to %s (%s): requests published now are lost: %r",
                    queue_name,
                    exchange_name,
                    EXPORT_REQUESTED_ROUTING_KEY,
                    exc,
                )
            binding.problem = f"export queue not bound to exchange {exchange_name}: {exc!r}"
            continue
        if binding.problem is not None:
            log.info("%s bound to %s again", queue_name, exchange_name)
        binding.problem = None


async def _stop_consuming(
    connection: AbstractRobustConnection, queue: AbstractQueue, tag: ConsumerTag
) -> None:
    """Ask the broker for no more requests, without waiting for a broker that is away.

    aio-pika's robust channel would wait for the connection to come back before cancelling,
    and hold up the shutdown for as long as the broker stays away; a lost connection has
    ended the consumer on the broker's side already.
    """
    if not connection.connected.is_set():
        log.info("RabbitMQ is away: stopping without cancelling the consumer")
        return
    try:
        await asyncio.wait_for(queue.cancel(tag), CANCEL_TIMEOUT_SECONDS)
    except (
        TimeoutError,
        aiormq.exceptions.AMQPError,
        aio_pika.exceptions.ChannelInvalidStateError,
    ) as exc:
        log.warning("consumer not cancelled (%r); stopping anyway", exc)
