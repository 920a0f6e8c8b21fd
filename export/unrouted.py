"""Completions RabbitMQ returned as unroutable, offered again until a queue takes them.

A completion is published with ``mandatory``: when no queue is bound to its routing key (a
requester whose reply queue is not declared yet, or a binding lost with its exchange), the
broker returns it. The request is acknowledged all the same (its export is done and recorded);
the completion stays marked in the ledger and is published again every
:data:`REOFFER_SECONDS` until it is routed, as ingest does with its events.
"""

from __future__ import annotations

import asyncio
import logging

from contracts.cloudevent import CONTENT_TYPE_STRUCTURED
from export.ledger import Ledger
from gateway.bus import Publisher
from gateway.errors import BrokerUnavailable, EventUnroutable, JournalError
from gateway.stop_signals import stopped_within

log = logging.getLogger(__name__)

REOFFER_SECONDS = 5.0


async def offer_unrouted(ledger: Ledger, publisher: Publisher, stop: asyncio.Event) -> None:
    """Publish unrouted completions again every :data:`REOFFER_SECONDS` until ``stop``."""
    while not await stopped_within(stop, REOFFER_SECONDS):
        try:
            waiting = await asyncio.to_thread(ledger.unrouted)
        except JournalError as exc:
            log.error("cannot look for unrouted completions: %s", exc)
            continue
        for completion in waiting:
            try:
                await publisher.publish(
                    completion.routing_key,
                    completion.body,
                    message_id=completion.event_id,
                    content_type=CONTENT_TYPE_STRUCTURED,
                )
            except EventUnroutable:
                continue  # still no queue for it: the next round offers it again
            except BrokerUnavailable as exc:
                log.warning("unrouted completions wait for RabbitMQ: %s", exc)
                break
            try:
                await asyncio.to_thread(ledger.mark_unrouted, completion.export_id, False)
            except JournalError as exc:
                log.error(
                    "export %s: completion delivered, not recorded: %s", completion.export_id, exc
                )
                continue
            log.info(
                "export %s: completion delivered to %s at last",
                completion.export_id,
                completion.routing_key,
            )
