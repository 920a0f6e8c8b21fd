"""Operator commands: ``echo`` a destination, ``send`` an export request (and wait for it)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    export_completed_from_event,
    export_requested_event,
    parse_event,
    to_structured,
)
from contracts.errors import InvalidEvent
from contracts.export import ExportCompleted, ExportRequested, ExportStatus
from contracts.routing import EXPORT_REQUESTED_ROUTING_KEY
from export.app import scu_identity
from export.scu import echo
from gateway.broker import AmqpPublisher
from gateway.bus import open_event_log
from gateway.errors import BrokerUnavailable, ConfigError, GatewayError
from gateway.settings import GatewaySettings


def echo_destination(settings: GatewaySettings, name: str) -> str | None:
    """C-ECHO a configured destination; None on success, else the reason."""
    destination = settings.export.destination(name)
    if destination is None:
        known = ", ".join(d.name for d in settings.export.destinations) or "none configured"
        raise ConfigError(f"unknown destination {name!r} (known: {known})")
    return echo(scu_identity(settings), settings.export, destination)


def build_request(
    destination: str,
    association_id: str | None,
    object_keys: tuple[str, ...],
    reply_routing_key: str | None,
) -> ExportRequested:
    return ExportRequested(
        export_id=f"cli-{uuid.uuid4()}",
        destinations=(destination,),
        association_id=association_id,
        object_keys=object_keys or None,
        reply_routing_key=reply_routing_key,
        correlation={"requested_by": "dicom-gateway send"},
    )


#: Called about once a second while ``send --wait`` waits, with the seconds waited so far.
Progress = Callable[[float], None]
#: How often the reply queue or the local event log is looked at for the completion.
_POLL_SECONDS = 0.2


async def send_request(
    settings: GatewaySettings,
    request: ExportRequested,
    wait_seconds: float | None,
    progress: Progress | None = None,
) -> ExportCompleted | None:
    """Publish ``request``; with ``wait_seconds``, wait for and return its completion."""
    event = export_requested_event(
        request, source="dicom-gateway://cli/send", time=datetime.now(UTC)
    )
    body = to_structured(event)
    if settings.broker.embedded:
        return await asyncio.to_thread(
            _send_local, settings, request, body, wait_seconds, progress or _quiet
        )
    publisher = AmqpPublisher(settings.broker.url, settings.broker.exchange, "dicom-gateway send")
    try:
        if wait_seconds is None:
            await publisher.publish(
                EXPORT_REQUESTED_ROUTING_KEY,
                body,
                message_id=request.export_id,
                content_type=CONTENT_TYPE_STRUCTURED,
            )
            return None
        return await _publish_and_wait(
            settings, publisher, request, body, wait_seconds, progress=progress or _quiet
        )
    finally:
        await publisher.close()


def _quiet(_elapsed: float) -> None:
    return None


def _send_local(
    settings: GatewaySettings,
    request: ExportRequested,
    body: bytes,
    wait_seconds: float | None,
    progress: Progress,
) -> ExportCompleted | None:
    event_log = open_event_log(settings.broker)
    try:
        seen = event_log.last_seq()
        event_log.append(
            EXPORT_REQUESTED_ROUTING_KEY,
            body,
            message_id=request.export_id,
            content_type=CONTENT_TYPE_STRUCTURED,
        )
        if wait_seconds is None:
            return None
        started = time.monotonic()
        reported = 0
        while (elapsed := time.monotonic() - started) < wait_seconds:
            for logged in event_log.read(after=seen):
                seen = logged.seq
                completed = _completion_of(
                    request, logged.routing_key, logged.body, logged.content_type, logged.headers
                )
                if completed is not None:
                    return completed
            if int(elapsed) > reported:
                reported = int(elapsed)
                progress(elapsed)
            time.sleep(_POLL_SECONDS)
    finally:
        event_log.close()
    raise GatewayError(f"no completion for {request.export_id} within {wait_seconds:g} s")


def _completion_of(
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


async def _publish_and_wait(
    settings: GatewaySettings,
    publisher: AmqpPublisher,
    request: ExportRequested,
    body: bytes,
    wait_seconds: float,
    *,
    progress: Progress,
) -> ExportCompleted:
    assert request.reply_routing_key is not None
    try:
        connection = await aio_pika.connect(
            settings.broker.url, client_properties={"connection_name": "dicom-gateway send --wait"}
        )
    except (aiormq.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"RabbitMQ not reachable: {exc}") from exc
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            settings.broker.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        await replies.bind(exchange, request.reply_routing_key)
        await publisher.publish(
            EXPORT_REQUESTED_ROUTING_KEY,
            body,
            message_id=request.export_id,
            content_type=CONTENT_TYPE_STRUCTURED,
        )
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await replies.consume(arrived.put, no_ack=True)
        started = time.monotonic()
        reported = 0
        while (elapsed := time.monotonic() - started) < wait_seconds:
            try:
                message = await asyncio.wait_for(arrived.get(), _POLL_SECONDS)
            except TimeoutError:
                if int(elapsed) > reported:
                    reported = int(elapsed)
                    progress(elapsed)
                continue
            completed = _completion_of(
                request,
                message.routing_key,
                message.body,
                message.content_type,
                dict(message.headers or {}),
            )
            if completed is not None:
                return completed
    raise GatewayError(f"no completion for {request.export_id} within {wait_seconds:g} s")


def summary(completed: ExportCompleted) -> str:
    lines = [f"export {completed.export_id}: {completed.status}"]
    for destination in completed.destinations:
        lines.append(
            f"  {destination.name}: {destination.status}, sent {destination.instances_sent}, "
            f"failed {destination.instances_failed}"
        )
        lines += [
            f"    {i.object_key}: {i.status}" + (f" ({i.error})" if i.error else "")
            for i in destination.instances
            if i.error
        ]
    return "\n".join(lines)


def succeeded(completed: ExportCompleted) -> bool:
    return completed.status is ExportStatus.SUCCEEDED
