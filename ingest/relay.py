"""Relaying the outbox to RabbitMQ: publish with confirms, then forget the association.

Runs on the asyncio loop thread. A broker outage only delays events: each stays in the outbox
until the broker confirmed it. An event the broker refuses for itself (a negative confirm) waits
and the events after it go on; refused again and again, it is set aside (:meth:`Outbox.refused`).
A crash between confirm and forget republishes the same event id, which subscribers can
recognise (at-least-once delivery).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from gateway.bus import Publisher
from gateway.errors import BrokerUnavailable, EventRefused, EventUnroutable, JournalError
from gateway.metrics import IngestMetrics
from gateway.stop_signals import stopped_within
from ingest.outbox import REFUSALS_BEFORE_SET_ASIDE, Outbox, OutboxEvent

log = logging.getLogger(__name__)

RETRY_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
#: An event no queue is bound for is kept and offered again this often, until a pipeline binds.
UNROUTED_RETRY_SECONDS = 30.0
#: How often the relay looks at the outbox without being woken (for deferred events).
IDLE_CHECK_SECONDS = 5.0


class Relay:
    def __init__(self, outbox: Outbox, publisher: Publisher, metrics: IngestMetrics) -> None:
        self._outbox = outbox
        self._publisher = publisher
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    def wake(self) -> None:
        """Called on the loop thread when the outbox has something new."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        try:
            again = await asyncio.to_thread(self._outbox.offer_set_aside_again)
        except JournalError as exc:
            log.warning("set-aside events not offered again: %s", exc)
        else:
            if again:
                log.info("%d set-aside event(s) offered again", again)
        attempt = 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                sent = await self._relay_pending(stoppable=True)
                attempt = 0
            except (BrokerUnavailable, JournalError) as exc:
                delay = RETRY_BACKOFF_SECONDS[min(attempt, len(RETRY_BACKOFF_SECONDS) - 1)]
                log.warning("event relay: %s; retrying in %.1f s", exc, delay)
                attempt += 1
                await self._sleep(delay)
                continue
            except Exception:  # the relay must outlive any surprise; the outbox keeps the events
                delay = RETRY_BACKOFF_SECONDS[-1]
                log.exception("event relay failed unexpectedly; retrying in %.1f s", delay)
                await self._sleep(delay)
                continue
            if not sent:
                try:
                    await asyncio.wait_for(self._wake.wait(), IDLE_CHECK_SECONDS)
                except TimeoutError:
                    continue

    async def _sleep(self, seconds: float) -> None:
        await stopped_within(self._stop, seconds)

    async def _relay_pending(self, *, stoppable: bool) -> int:
        events = await asyncio.to_thread(self._outbox.pending, datetime.now(UTC))
        published = 0
        for event in events:
            if stoppable and self._stop.is_set():
                break
            try:
                await self._publisher.publish(
                    event.routing_key,
                    event.body,
                    message_id=event.event_id,
                    content_type=event.content_type,
                )
            except EventRefused as exc:
                await self._refused(event, exc)
                continue
            except EventUnroutable as exc:
                # RabbitMQ would drop it: keep it and offer it again until a pipeline binds.
                log.warning(
                    "event %s kept in the outbox: %s; offered again in %.0f s",
                    event.event_id,
                    exc,
                    UNROUTED_RETRY_SECONDS,
                )
                until = datetime.now(UTC) + timedelta(seconds=UNROUTED_RETRY_SECONDS)
                await asyncio.to_thread(self._outbox.defer, event.event_id, until)
                continue
            await asyncio.to_thread(self._outbox.published, event)
            published += 1
            self._count(event)
            log.info("event %s published to %s", event.event_id, event.routing_key)
        return published

    async def _refused(self, event: OutboxEvent, refusal: EventRefused) -> None:
        """This event, not the broker, is the problem: it waits and the others go on."""
        refusals = await asyncio.to_thread(
            self._outbox.refused, event.event_id, str(refusal), datetime.now(UTC)
        )
        if refusals >= REFUSALS_BEFORE_SET_ASIDE:
            log.error(
                "event %s (association %s, %d bytes) set aside after %d refusals: %s; later "
                "events go on, and it is offered again hourly and at the next start",
                event.event_id,
                event.association_id,
                len(event.body),
                refusals,
                refusal,
            )
        else:
            log.warning("event %s refused (%s); offered again shortly", event.event_id, refusal)

    def _count(self, event: OutboxEvent) -> None:
        self._metrics.events_published.inc()
        if event.released_at is not None:
            latency = (datetime.now(UTC) - event.released_at).total_seconds()
            self._metrics.event_publish_latency.observe(max(latency, 0.0))

    async def drain(self, timeout: float) -> bool:
        """Relay what is pending now, within ``timeout``; True if the outbox ended empty."""
        try:
            await asyncio.wait_for(self._relay_pending(stoppable=False), timeout)
        except (BrokerUnavailable, JournalError, TimeoutError) as exc:
            log.warning("outbox not flushed at shutdown (%s); it is sent on the next start", exc)
            return False
        return await asyncio.to_thread(self._outbox.depth) == 0
