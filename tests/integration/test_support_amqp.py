"""EventCollector sees what is published to the gateway's exchange, and only that; both
collectors' assert_no_more catches a message published before it, however late it arrives."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import aio_pika
import pytest

from gateway.eventlog import EventLog
from tests.support.amqp import GATEWAY_EXCHANGE, EventCollector
from tests.support.local_bus import LocalEventCollector


async def _publish(amqp_url: str, routing_key: str, body: bytes) -> None:
    connection = await aio_pika.connect(
        amqp_url, client_properties={"connection_name": "tests: publisher"}
    )
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            GATEWAY_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        message = aio_pika.Message(
            body,
            content_type="application/cloudevents+json",
            message_id="event-1",
            headers={"ce-specversion": "1.0"},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await exchange.publish(message, routing_key=routing_key)


def test_collector_receives_matching_messages(amqp_url: str) -> None:
    pipeline = f"test-{secrets.token_hex(4)}"
    with EventCollector(amqp_url, binding_keys=(f"association.released.{pipeline}",)) as events:
        asyncio.run(_publish(amqp_url, "association.released.other-pipeline", b"{}"))
        asyncio.run(_publish(amqp_url, f"association.released.{pipeline}", b'{"n": 1}'))
        (message,) = events.wait_for(1, timeout=10)
        events.assert_no_more()  # the other pipeline's message was published first
    assert message.body == b'{"n": 1}'
    assert message.routing_key == f"association.released.{pipeline}"
    assert message.content_type == "application/cloudevents+json"
    assert message.message_id == "event-1"
    assert message.headers == {"ce-specversion": "1.0"}
    assert message.delivery_mode == 2


def test_wait_for_reports_what_arrived(amqp_url: str) -> None:
    pipeline = f"test-{secrets.token_hex(4)}"
    with EventCollector(amqp_url, binding_keys=(f"association.released.{pipeline}",)) as events:
        asyncio.run(_publish(amqp_url, f"association.released.{pipeline}", b"only one"))
        with pytest.raises(AssertionError, match=r"got 1: .*only one"):
            events.wait_for(2, timeout=1)


def test_assert_quiet_fails_on_a_further_message(amqp_url: str) -> None:
    pipeline = f"test-{secrets.token_hex(4)}"
    with EventCollector(amqp_url, binding_keys=(f"association.released.{pipeline}",)) as events:
        asyncio.run(_publish(amqp_url, f"association.released.{pipeline}", b"first"))
        events.wait_for(1, timeout=10)
        asyncio.run(_publish(amqp_url, f"association.released.{pipeline}", b"second"))
        with pytest.raises(AssertionError, match="second"):
            events.assert_quiet(5)


def test_assert_no_more_catches_a_message_published_before_it(amqp_url: str) -> None:
    pipeline = f"test-{secrets.token_hex(4)}"
    with EventCollector(amqp_url, binding_keys=(f"association.released.{pipeline}",)) as events:
        asyncio.run(_publish(amqp_url, f"association.released.{pipeline}", b"first"))
        events.wait_for(1, timeout=10)
        events.assert_no_more()
        asyncio.run(_publish(amqp_url, f"association.released.{pipeline}", b"second"))
        with pytest.raises(AssertionError, match="second"):
            events.assert_no_more()


def test_the_local_collector_catches_an_event_appended_before_the_check(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    event_log = EventLog.open(path)
    try:
        with LocalEventCollector(path, ("association.released.#",)) as events:
            events.assert_no_more()
            event_log.append("export.requested", b"other", message_id="1", content_type=None)
            events.assert_no_more()  # not routed to the collector
            event_log.append("association.released.x", b"late", message_id="2", content_type=None)
            with pytest.raises(AssertionError, match="late"):
                events.assert_no_more()
    finally:
        event_log.close()


def test_connection_is_named_after_the_test(amqp_url: str) -> None:
    with EventCollector(amqp_url) as events:
        assert events.connection_name.endswith(
            "test_support_amqp.py::test_connection_is_named_after_the_test"
        )
