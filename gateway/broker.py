"""Publishing to RabbitMQ with publisher confirms (aio-pika).

A publish returns only once the broker has confirmed the message. Connection problems of any
kind become :class:`BrokerUnavailable`; the caller keeps the message and retries, because a
robust connection does not replay publishes that were in flight when it broke.
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika
import aiormq
import pamqp.commands
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from gateway.amqp_connect import broker_address, connect
from gateway.bus import CONFIRM_TIMEOUT_SECONDS
from gateway.errors import BrokerUnavailable, EventRefused, EventUnroutable

log = logging.getLogger(__name__)


class AmqpPublisher:
    """:class:`~gateway.bus.Publisher` onto RabbitMQ: one connection and one confirming
    channel, (re)opened on demand."""

    def __init__(self, url: str, exchange: str, connection_name: str) -> None:
        self._url = url
        self._exchange_name = exchange
        self._connection_name = connection_name
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        # Concurrent publishes (export completes several requests at once) must share one
        # connection attempt rather than each closing the others' half-open connection.
        self._opening = asyncio.Lock()

    async def _ensure_open(self) -> AbstractExchange:
        async with self._opening:
            return await self._open_if_needed()

    async def _open_if_needed(self) -> AbstractExchange:
        if self._exchange is not None and self._channel is not None and not self._channel.is_closed:
            return self._exchange
        await self.close()
        self._connection = await connect(self._url, self._connection_name)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        log.info("connected to RabbitMQ, exchange %s", self._exchange_name)
        return self._exchange

    async def ensure_ready(self) -> None:
        """Declare the exchange now (start-up), so pipelines can bind before the first event."""
        try:
            await self._ensure_open()
        except BrokerUnavailable:
            await self.close()
            raise
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            await self.close()
            raise BrokerUnavailable(f"RabbitMQ at {broker_address(self._url)}: {exc}") from exc

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, content_type: str
    ) -> None:
        try:
            exchange = await self._ensure_open()
            confirmation = await exchange.publish(
                aio_pika.Message(
                    body,
                    content_type=content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message_id,
                ),
                routing_key=routing_key,
                mandatory=True,
                timeout=CONFIRM_TIMEOUT_SECONDS,
            )
        except BrokerUnavailable as exc:  # connecting failed; the reason says why
            raise BrokerUnavailable(f"publish of {message_id} failed: {exc}") from exc
        except aiormq.exceptions.DeliveryError as exc:
            # A negative confirm: this message, not the channel, was refused.
            raise EventRefused(f"RabbitMQ refused {message_id} (negative confirm)") from exc
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            # What RabbitMQ closes the channel with on a message over its max_message_size.
            await self.close()
            raise EventRefused(f"RabbitMQ refused {message_id}: {exc}") from exc
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            await self.close()
            raise BrokerUnavailable(f"publish of {message_id} failed: {exc}") from exc
        if confirmation is None:
            raise BrokerUnavailable(f"broker did not confirm {message_id}")
        if not isinstance(confirmation, pamqp.commands.Basic.Ack):
            # Returned: no queue is bound to the key, so RabbitMQ would drop it.
            raise EventUnroutable(
                f"no queue is bound to {routing_key!r} on exchange {self._exchange_name}"
            )

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = None
        self._exchange = None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except (aiormq.exceptions.AMQPError, OSError) as exc:
                log.debug("closing a broken RabbitMQ connection: %s", exc)
