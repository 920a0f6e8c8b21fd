"""Where export requests come from on the local event log (no RabbitMQ): a subscription.

The subscription ``export.queue`` is bound to ``export.requested``; at most ``prefetch``
requests are taken at once, and dead letters stay in the log with their reason.
"""

from __future__ import annotations

import asyncio
import logging

from contracts.routing import EXPORT_REQUESTED_ROUTING_KEY
from export.consumer import CONSUMING, ExportConsumer
from gateway.bus import LocalDelivery
from gateway.errors import BrokerUnavailable
from gateway.eventlog import EventLog
from gateway.settings import GatewaySettings
from gateway.stop_signals import stopped_within

log = logging.getLogger(__name__)

#: How often the intake looks for new requests while idle.
LOCAL_POLL_SECONDS = 0.2


async def consume_local(
    settings: GatewaySettings, event_log: EventLog, consumer: ExportConsumer, stop: asyncio.Event
) -> None:
    """Consume from the local event log until ``stop`` is set."""
    export = settings.export
    subscription = export.queue
    await asyncio.to_thread(event_log.subscribe, subscription, EXPORT_REQUESTED_ROUTING_KEY)
    consumer.attach(lambda: None)
    log.info(
        "%s %s on the local event log %s (prefetch %d, at most %d associations)",
        CONSUMING,
        subscription,
        settings.broker.event_log,
        export.prefetch,
        export.max_associations,
    )
    tasks: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        room = export.prefetch - len(tasks)
        claimed = []
        if room > 0:
            try:
                claimed = await asyncio.to_thread(event_log.claim, subscription, room)
            except BrokerUnavailable as exc:
                log.warning("event log: %s; trying again", exc)
        for item in claimed:
            task = asyncio.create_task(
                consumer.handle(LocalDelivery(event_log, subscription, item.event))
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if not claimed:
            await stopped_within(stop, LOCAL_POLL_SECONDS)
    consumer.detach()
    await consumer.finish()
