"""``dicom-gateway events``: print events as CloudEvent JSON, one per line.

From the local event log it prints the whole log (``--follow``: then waits for more); a
pipeline can be a script that reads these lines. With RabbitMQ, which keeps no history, it binds
a temporary queue to the exchange and prints what arrives from then on (``--follow`` only).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from contracts.cloudevent import parse_event, to_structured
from contracts.errors import InvalidEvent
from gateway.amqp_connect import connect
from gateway.bus import open_event_log
from gateway.errors import ConfigError
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.2

Write = Callable[[str], None]


def event_line(
    body: bytes, content_type: str | None, headers: Mapping[str, Any], event_type: str | None
) -> str | None:
    """The event as one line of structured-mode JSON; None if it is filtered out.

    Binary-mode events are rewritten in structured mode, so every line reads the same way.
    Raises :class:`InvalidEvent` for a message that is not a CloudEvent.
    """
    event = parse_event(body, content_type=content_type, headers=dict(headers))
    if event_type is not None and event.get_type() != event_type:
        return None
    return json.dumps(json.loads(to_structured(event)), separators=(",", ":"))


def print_events(
    settings: GatewaySettings,
    *,
    follow: bool,
    event_type: str | None,
    write: Write,
    until: Callable[[], bool] = lambda: False,
) -> int:
    """Print the events; returns how many were printed. ``until`` ends ``--follow``."""
    if not settings.broker.embedded:
        if not follow:
            raise ConfigError(
                "RabbitMQ keeps no history to print: use --follow to print events as they come"
            )
        return asyncio.run(_follow_amqp(settings, event_type, write, until))
    if not settings.broker.event_log.exists():
        raise ConfigError(
            f"no event log at {settings.broker.event_log}: has the gateway run here "
            "(check [broker] event_log)?"
        )
    event_log = open_event_log(settings.broker)
    printed = 0
    seen = 0
    if follow:
        log.info("following the local event log %s", settings.broker.event_log)
    try:
        while True:
            batch = event_log.read(after=seen)
            for logged in batch:
                seen = logged.seq
                printed += _print_one(
                    logged.body, logged.content_type, logged.headers, event_type, write
                )
            if not batch and (not follow or until()):
                return printed
            if not batch:
                time.sleep(_POLL_SECONDS)
    finally:
        event_log.close()


def _print_one(
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, Any],
    event_type: str | None,
    write: Write,
) -> int:
    try:
        line = event_line(body, content_type, headers, event_type)
    except InvalidEvent as exc:
        log.warning("skipped a message that is not a CloudEvent: %s", exc)
        return 0
    if line is None:
        return 0
    write(line)
    return 1


async def _follow_amqp(
    settings: GatewaySettings, event_type: str | None, write: Write, until: Callable[[], bool]
) -> int:
    connection = await connect(settings.broker.url, "dicom-gateway events")
    printed = 0
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            settings.broker.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "#")
        # While this queue exists it receives every event too: RabbitMQ no longer treats an
        # event as unroutable only because no pipeline is bound yet.
        log.info("following every event on exchange %s", settings.broker.exchange)
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(arrived.put, no_ack=True)
        while not until():
            try:
                message = await asyncio.wait_for(arrived.get(), _POLL_SECONDS)
            except TimeoutError:
                continue
            printed += _print_one(
                message.body, message.content_type, dict(message.headers or {}), event_type, write
            )
    return printed
