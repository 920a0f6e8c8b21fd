"""Operator commands: ``echo`` a destination, ``send`` an export request (and wait for it)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import aio_pika
import aiormq

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    export_completed_from_event,
    export_requested_event,
    parse_event,
    to_structured,
)
from contracts.export import ExportCompleted, ExportRequested, ExportStatus
from contracts.routing import EXPORT_REQUESTED_ROUTING_KEY
from export.app import scu_identity
from export.scu import echo
from gateway.broker import AmqpPublisher
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


async def send_request(
    settings: GatewaySettings, request: ExportRequested, wait_seconds: float | None
) -> ExportCompleted | None:
    """Publish ``request``; with ``wait_seconds``, wait for and return its completion."""
    event = export_requested_event(
        request, source="dicom-gateway://cli/send", time=datetime.now(UTC)
    )
    publisher = AmqpPublisher(settings.broker.url, settings.broker.exchange, "dicom-gateway send")
    try:
        if wait_seconds is None:
            await publisher.publish(
                EXPORT_REQUESTED_ROUTING_KEY,
                to_structured(event),
                message_id=str(event.get_id()),
                content_type=CONTENT_TYPE_STRUCTURED,
            )
            return None
        return await _publish_and_wait(
            settings, publisher, request, to_structured(event), wait_seconds
        )
    finally:
        await publisher.close()


async def _publish_and_wait(
    settings: GatewaySettings,
    publisher: AmqpPublisher,
    request: ExportRequested,
    body: bytes,
    wait_seconds: float,
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
        async with asyncio.timeout(wait_seconds), replies.iterator() as messages:
            async for message in messages:
                async with message.process():
                    completed = export_completed_from_event(
                        parse_event(
                            message.body,
                            content_type=message.content_type,
                            headers=dict(message.headers or {}),
                        )
                    )
                if completed.export_id == request.export_id:
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


def completion_json(completed: ExportCompleted) -> str:
    return json.dumps(completed.model_dump(mode="json"), indent=2)


def succeeded(completed: ExportCompleted) -> bool:
    return completed.status is ExportStatus.SUCCEEDED
