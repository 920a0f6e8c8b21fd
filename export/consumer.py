"""Handling export requests, whichever bus they come from; one completion event each.

The bus-specific side (RabbitMQ queue topology, the local event log's subscription) is in
:mod:`export.intake` and :mod:`export.local_intake`; each hands every message to
:meth:`ExportConsumer.handle` as a :class:`~gateway.bus.Delivery`.

A request is acknowledged only after its completion is recorded in the ledger and confirmed by
the bus. Invalid messages are dead-lettered and the reason is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    export_completed_event,
    export_requested_from_event,
    parse_event,
    to_structured,
)
from contracts.errors import InvalidEvent
from contracts.export import ExportCompleted, ExportRequested
from contracts.routing import EXPORT_COMPLETED_ROUTING_KEY
from export.exporter import Exporter
from export.idempotency import conflict_completion, request_digest
from export.ledger import Ledger, RecordedCompletion
from export.unrouted import REOFFER_SECONDS
from gateway.bus import Delivery, Publisher
from gateway.errors import BrokerUnavailable, EventUnroutable, JournalError, StorageUnavailable
from gateway.metrics import ExportMetrics
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

#: The log line that says export is attached to its queue (the tests wait for it).
CONSUMING = "export consuming"
#: A request that failed on storage is put back after this pause, not in a hot loop.
REQUEUE_PAUSE_SECONDS = 5.0
#: The metrics status of a request dead-lettered without being carried out.
INVALID = "invalid"
#: The metrics status of a request refused because its export_id names a different request.
CONFLICT = "conflict"
UNKNOWN_DESTINATION = "(unknown)"


class ExportConsumer:
    def __init__(
        self,
        settings: GatewaySettings,
        exporter: Exporter,
        ledger: Ledger,
        publisher: Publisher,
        metrics: ExportMetrics,
    ) -> None:
        self._settings = settings
        self._exporter = exporter
        self._ledger = ledger
        self._publisher = publisher
        self._metrics = metrics
        self._in_flight: set[asyncio.Task[None]] = set()
        self._exporting: set[str] = set()  # export ids being carried out right now
        self._attachment: Callable[[], str | None] | None = None

    def attach(self, attachment: Callable[[], str | None]) -> None:
        """Called by the intake once it consumes; ``attachment`` says if it still does."""
        self._attachment = attachment

    def detach(self) -> None:
        self._attachment = None

    def readiness(self) -> str | None:
        """None while requests can arrive, else why not (for ``/readyz``)."""
        if self._attachment is None:
            return "not attached to the export queue"
        return self._attachment()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def finish(self) -> None:
        """After the intake stopped: let requests in flight finish within the grace period.

        What does not finish is cancelled unacknowledged, so the bus hands it out again.
        """
        if not self._in_flight:
            return
        log.info("waiting for %d export(s) in flight", len(self._in_flight))
        _done, pending = await asyncio.wait(
            self._in_flight, timeout=self._settings.export.shutdown_grace_seconds
        )
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
            log.warning("%d export(s) not finished in the grace period: requeued", len(pending))

    async def handle(self, delivery: Delivery) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        self._metrics.in_flight.inc()
        try:
            await self._handle(delivery)
        except Exception as exc:  # the consumer's boundary: one request must never stall the rest
            log.exception(
                "export request %s failed unexpectedly: dead-lettered",
                delivery.message_id or "(no message id)",
            )
            self._metrics.requests.labels(INVALID).inc()
            await delivery.dead_letter(f"unexpected error: {exc!r}")
        finally:
            self._metrics.in_flight.dec()
            if task is not None:
                self._in_flight.discard(task)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            request = export_requested_from_event(
                parse_event(
                    delivery.body,
                    content_type=delivery.content_type,
                    headers=dict(delivery.headers),
                )
            )
        except InvalidEvent as exc:
            log.error(
                "export request %s dead-lettered: %s", delivery.message_id or "(no message id)", exc
            )
            self._metrics.requests.labels(INVALID).inc()
            await delivery.dead_letter(str(exc))
            return
        if request.export_id in self._exporting:
            # The same export is under way: once it is done this copy finds its completion.
            await delivery.requeue(REQUEUE_PAUSE_SECONDS)
            return
        self._exporting.add(request.export_id)
        try:
            await self._complete(request, delivery)
        finally:
            self._exporting.discard(request.export_id)

    async def _complete(self, request: ExportRequested, delivery: Delivery) -> None:
        digest = request_digest(request)
        try:
            recorded = await asyncio.to_thread(self._ledger.completion, request.export_id)
            conflict = recorded is not None and recorded.request_sha256 not in (None, digest)
            if recorded is None:
                recorded = await self._export(request, digest)
            elif conflict:
                recorded = self._conflict(request, digest, recorded)
            else:
                log.info(
                    "export %s was completed before: its completion is published again",
                    request.export_id,
                )
            await self._publisher.publish(
                recorded.routing_key,
                recorded.body,
                message_id=recorded.event_id,
                content_type=CONTENT_TYPE_STRUCTURED,
            )
        except (StorageUnavailable, JournalError) as exc:
            log.warning("export %s put back for later: %s", request.export_id, exc)
            await delivery.requeue(REQUEUE_PAUSE_SECONDS)
            return
        except EventUnroutable as exc:
            if conflict:
                # Not in the ledger (the id belongs to the other request): nothing to offer
                # again; the requester learns of the conflict by requesting once more.
                log.warning("export %s: refusal not delivered: %s", request.export_id, exc)
            elif not await self._offer_again(request.export_id, exc):
                await delivery.requeue(REQUEUE_PAUSE_SECONDS)
                return
        except BrokerUnavailable as exc:
            # The completion is in the ledger; the redelivered request publishes it again.
            log.warning(
                "export %s: completion not confirmed (%s); requeued", request.export_id, exc
            )
            await delivery.requeue(0)
            return
        await delivery.ack()

    async def _offer_again(self, export_id: str, unrouted: EventUnroutable) -> bool:
        """Mark the recorded completion to be offered again (export/unrouted.py); False if
        the ledger cannot say so, and the request must come back to publish it again."""
        try:
            await asyncio.to_thread(self._ledger.mark_unrouted, export_id, True)
        except JournalError as exc:
            log.error(
                "export %s: completion not delivered (%s) nor kept: %s", export_id, unrouted, exc
            )
            return False
        log.warning(
            "export %s: completion not delivered (%s): offered again every %.0f s",
            export_id,
            unrouted,
            REOFFER_SECONDS,
        )
        return True

    async def _export(self, request: ExportRequested, digest: str) -> RecordedCompletion:
        completed = await self._exporter.run(request)
        event = export_completed_event(completed, source=self._source, time=datetime.now(UTC))
        recorded = RecordedCompletion(
            export_id=request.export_id,
            routing_key=request.reply_routing_key or EXPORT_COMPLETED_ROUTING_KEY,
            event_id=str(event.get_id()),
            body=to_structured(event),
            request_sha256=digest,
        )
        await asyncio.to_thread(self._ledger.record, recorded, completed.finished_at)
        self._count(completed)
        return recorded

    def _conflict(
        self, request: ExportRequested, digest: str, first: RecordedCompletion
    ) -> RecordedCompletion:
        """The completion refusing ``request``, whose export_id names the ``first`` one."""
        now = datetime.now(UTC)
        completed = conflict_completion(request, first.finished_at or now, now)
        log.warning(
            "export %s refused: the export_id was used by a different request before; "
            "nothing sent, a failed completion goes to %s",
            request.export_id,
            request.reply_routing_key or EXPORT_COMPLETED_ROUTING_KEY,
        )
        self._metrics.requests.labels(CONFLICT).inc()
        event = export_completed_event(
            completed, source=self._source, time=now, conflicting_request=digest
        )
        # Not recorded: the ledger keeps the export the id belongs to.
        return RecordedCompletion(
            export_id=request.export_id,
            routing_key=request.reply_routing_key or EXPORT_COMPLETED_ROUTING_KEY,
            event_id=str(event.get_id()),
            body=to_structured(event),
        )

    @property
    def _source(self) -> str:
        return f"dicom-gateway://{self._settings.ingest.instance_name}/export"

    def _count(self, completed: ExportCompleted) -> None:
        self._metrics.requests.labels(completed.status.value).inc()
        for destination in completed.destinations:
            # Requests may name anything; only configured names become label values.
            known = self._settings.export.destination(destination.name) is not None
            label = destination.name if known else UNKNOWN_DESTINATION
            for instance in destination.instances:
                self._metrics.instances.labels(label, instance.status.value).inc()
