"""EventCollector sees what is published to the gateway's exchange, and only that."""

from __future__ import annotations

import asyncio
import secrets

import aio_pika
import pytest

from tests.support.amqp import GATEWAY_EXCHANGE, EventCollector


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
        events.assert_quiet(0.5)
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


def test_connection_is_named_after_the_test(amqp_url: str) -> None:
    with EventCollector(amqp_url) as events:
        assert events.connection_name.endswith(
            "test_support_amqp.py::test_connection_is_named_after_the_test"
        )
