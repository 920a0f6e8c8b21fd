"""Consuming export requests from RabbitMQ and answering each with one completion event.

Topology (declared at start-up, idempotently): the durable topic exchange, a durable quorum
queue ``export.queue`` bound to ``export.requested`` whose rejected messages go to the quorum
queue ``<queue>.dead-letter`` through the default exchange.

A request is acknowledged only after its completion is recorded in the ledger and confirmed by
the broker. Invalid messages are rejected without requeue, so they land in the dead-letter
queue, and the reason is logged.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    export_completed_event,
    export_requested_from_event,
    parse_event,
    to_structured,
)
from contracts.errors import InvalidEvent
from contracts.export import ExportRequested
from contracts.routing import EXPORT_COMPLETED_ROUTING_KEY, EXPORT_REQUESTED_ROUTING_KEY
from export.exporter import Exporter
from export.ledger import Ledger, RecordedCompletion
from gateway.broker import Publisher
from gateway.errors import BrokerUnavailable, EventUnroutable, JournalError, StorageUnavailable
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0)
#: A request that failed on storage is put back after this pause, not in a hot loop.
REQUEUE_PAUSE_SECONDS = 5.0


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dead-letter"


class ExportConsumer:
    def __init__(
        self,
        settings: GatewaySettings,
        exporter: Exporter,
        ledger: Ledger,
        publisher: Publisher,
    ) -> None:
        self._settings = settings
        self._exporter = exporter
        self._ledger = ledger
        self._publisher = publisher
        self._in_flight: set[asyncio.Task[None]] = set()
        self._exporting: set[str] = set()  # export ids being carried out right now
        self.attached = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, reconnecting while the broker is away."""
        attempt = 0
        while not stop.is_set():
            try:
                connection = await aio_pika.connect_robust(
                    self._settings.broker.url,
                    client_properties={
                        "connection_name": f"{self._settings.export.queue} consumer"
                    },
                )
            except (aiormq.exceptions.AMQPError, OSError) as exc:
                delay = RECONNECT_BACKOFF_SECONDS[min(attempt, len(RECONNECT_BACKOFF_SECONDS) - 1)]
                log.warning("RabbitMQ not reachable (%s); retrying in %.0f s", exc, delay)
                attempt += 1
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    continue
                return
            async with connection:
                await self._consume(connection, stop)
            return

    async def _consume(self, connection: AbstractRobustConnection, stop: asyncio.Event) -> None:
        export = self._settings.export
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=export.prefetch)
        exchange = await channel.declare_exchange(
            self._settings.broker.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dead_letters = dead_letter_queue(export.queue)
        await channel.declare_queue(
            dead_letters, durable=True, arguments={"x-queue-type": "quorum"}
        )
        queue: AbstractQueue = await channel.declare_queue(
            export.queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dead_letters,
            },
        )
        await queue.bind(exchange, EXPORT_REQUESTED_ROUTING_KEY)
        tag = await queue.consume(self._on_message)
        self.attached.set()
        log.info(
            "export consuming %s (prefetch %d, at most %d associations)",
            export.queue,
            export.prefetch,
            export.max_associations,
        )
        await stop.wait()
        await queue.cancel(tag)
        self.attached.clear()
        if self._in_flight:
            log.info("waiting for %d export(s) in flight", len(self._in_flight))
            _done, pending = await asyncio.wait(
                self._in_flight, timeout=export.shutdown_grace_seconds
            )
            for task in pending:
                task.cancel()  # unacknowledged: the broker hands the request out again
            if pending:
                log.warning("%d export(s) not finished in the grace period: requeued", len(pending))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._handle(message)
        except Exception:  # the consumer's boundary: one request must never stall the rest
            log.exception(
                "export request %s failed unexpectedly: rejected to %s",
                message.message_id or "(no message id)",
                dead_letter_queue(self._settings.export.queue),
            )
            await message.reject(requeue=False)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            request = export_requested_from_event(
                parse_event(
                    message.body,
                    content_type=message.content_type,
                    headers=dict(message.headers or {}),
                )
            )
        except InvalidEvent as exc:
            log.error(
                "export request %s rejected to %s: %s",
                message.message_id or "(no message id)",
                dead_letter_queue(self._settings.export.queue),
                exc,
            )
            await message.reject(requeue=False)
            return
        if request.export_id in self._exporting:
            # The same export is under way: once it is done this copy finds its completion.
            await asyncio.sleep(REQUEUE_PAUSE_SECONDS)
            await message.nack(requeue=True)
            return
        self._exporting.add(request.export_id)
        try:
            await self._complete(request, message)
        finally:
            self._exporting.discard(request.export_id)

    async def _complete(self, request: ExportRequested, message: AbstractIncomingMessage) -> None:
        try:
            recorded = await asyncio.to_thread(self._ledger.completion, request.export_id)
            if recorded is not None:
                log.info(
                    "export %s was completed before: its completion is published again",
                    request.export_id,
                )
            else:
                recorded = await self._export(request)
            await self._publisher.publish(
                recorded.routing_key,
                recorded.body,
                message_id=recorded.event_id,
                content_type=CONTENT_TYPE_STRUCTURED,
            )
        except (StorageUnavailable, JournalError) as exc:
            log.warning("export %s put back for later: %s", request.export_id, exc)
            await asyncio.sleep(REQUEUE_PAUSE_SECONDS)
            await message.nack(requeue=True)
            return
        except EventUnroutable as exc:
            # Kept in the ledger: requesting the same export_id again publishes it again.
            log.warning("export %s: completion not delivered: %s", request.export_id, exc)
        except BrokerUnavailable as exc:
            # The completion is in the ledger; the redelivered request publishes it again.
            log.warning(
                "export %s: completion not confirmed (%s); requeued", request.export_id, exc
            )
            await message.nack(requeue=True)
            return
        await message.ack()

    async def _export(self, request: ExportRequested) -> RecordedCompletion:
        completed = await self._exporter.run(request)
        event = export_completed_event(
            completed,
            source=f"dicom-gateway://{self._settings.ingest.instance_name}/export",
            time=datetime.now(UTC),
        )
        recorded = RecordedCompletion(
            export_id=request.export_id,
            routing_key=request.reply_routing_key or EXPORT_COMPLETED_ROUTING_KEY,
            event_id=str(event.get_id()),
            body=to_structured(event),
        )
        await asyncio.to_thread(self._ledger.record, recorded, completed.finished_at)
        return recorded
