"""Events stay bounded whatever the association, and one refused event holds no other back.

An association of many instances would make an event too large for the broker (180,000 tiny
instances made a 142 MB event, over RabbitMQ's 128 MiB limit, and every later event waited
behind it for ever). Here ``max_event_bytes`` is set low so that a few dozen instances cross it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import pytest

from contracts import AssociationReleased, with_manifest_instances
from gateway.bus import dead_letter_queue
from gateway_client import PipelineClient
from gateway_client.testing import GatewayProcess, delete_amqp_topology
from tests.support import dcmtk
from tests.support.amqp import ReceivedMessage
from tests.support.factories import Instance, ct_series
from tests.support.ingest import RABBITMQ_S3, Ingest, released
from tests.support.net import wait_until
from tests.support.prometheus import metric
from tests.support.settled import wait_until_handed_on

SMALL_EVENT_LIMIT = 16_384
#: Enough tiny instances to list more than SMALL_EVENT_LIMIT bytes (about 600 bytes each).
MANY = 60


def test_a_long_instance_list_travels_in_a_manifest(ingest: Ingest, inbox: Path) -> None:
    gateway = ingest.start(max_event_bytes=SMALL_EVENT_LIMIT)
    many = ct_series(inbox / "many", MANY, rows=8, cols=8, seed=1)
    one = ct_series(inbox / "one", 1, rows=8, cols=8, seed=2)
    consumer = f"{ingest.bucket}.reader"
    try:
        messages, seen_by_client = asyncio.run(
            _send_and_receive(ingest, gateway, [many, one], consumer)
        )
    finally:
        if not ingest.embedded:
            queues = [consumer, dead_letter_queue(consumer)]
            asyncio.run(delete_amqp_topology(ingest.amqp_url, ingest.exchange, queues))
    wait_until_handed_on(ingest.workdir / "spool")

    assert all(len(message.body) <= SMALL_EVENT_LIMIT for message in messages)
    big, small = sorted((released(m) for m in messages), key=lambda e: -e.instance_count)
    assert small.manifest is None
    assert [i.sop_instance_uid for i in small.instances] == [one[0].uids.sop_instance]

    assert big.manifest is not None
    assert big.instances == ()
    assert big.instance_count == MANY
    (manifest,) = ingest.objects_named([big.manifest.object_key]).values()
    listed = with_manifest_instances(big, manifest.splitlines(keepends=True))
    assert [i.sop_instance_uid for i in listed.instances] == [s.uids.sop_instance for s in many]
    objects = ingest.objects_named([i.object_key for i in listed.instances])
    assert sum(len(data) for data in objects.values()) == big.total_bytes

    # A pipeline using the client sees the list, whichever form the event took.
    by_id = {event.association_id: event for event in seen_by_client}
    assert by_id[big.association_id] == listed
    assert by_id[small.association_id] == small


async def _send_and_receive(
    ingest: Ingest, gateway: GatewayProcess, sends: list[list[Instance]], consumer: str
) -> tuple[list[ReceivedMessage], list[AssociationReleased]]:
    """Send each list in an association; the raw messages, and the events as the client gives
    them to a pipeline subscribed before the first was published."""
    async with PipelineClient.from_config(gateway.config_path, name="manifest-reader") as client:
        subscription = await client.subscribe(consumer=consumer, pipeline="default")
        with ingest.events() as events:
            for series in sends:
                paths = [s.path for s in series]
                sent = await asyncio.to_thread(
                    dcmtk.storescu, gateway.host, gateway.port, paths, "GATEWAY"
                )
                sent.check()
            messages = await asyncio.to_thread(events.wait_for, len(sends))
        seen = []
        for _ in sends:
            received = await asyncio.wait_for(subscription.next(), 30)
            await received.ack()
            seen.append(received.event)
    return messages, seen


@pytest.mark.backends(RABBITMQ_S3)
def test_an_event_the_broker_refuses_is_set_aside_and_later_events_go_on(
    ingest: Ingest, inbox: Path
) -> None:
    config = ingest.config()
    config["ingest"]["ae"] = [
        {"ae_title": "REFUSED-AI", "pipeline": "refused"},
        {"ae_title": "HONEST-AI", "pipeline": "honest"},
    ]
    gateway = ingest.start(config)
    refusing = f"{ingest.bucket}.refusing"
    # RabbitMQ answers a publish this queue cannot take with a negative confirm: the broker
    # works, but this one message is refused, every time.
    asyncio.run(_declare_refusing_queue(ingest, refusing, "association.released.refused"))
    try:
        with ingest.events(["association.released.honest"]) as honest:
            refused_series = ct_series(inbox / "refused", 1, rows=8, cols=8, seed=3)
            dcmtk.storescu(
                gateway.host, gateway.port, [refused_series[0].path], "REFUSED-AI"
            ).check()
            wait_until(lambda: " refused (" in gateway.log_text(), 30, "the first refusal")
            honest_series = ct_series(inbox / "honest", 1, rows=8, cols=8, seed=4)
            dcmtk.storescu(gateway.host, gateway.port, [honest_series[0].path], "HONEST-AI").check()
            (message,) = honest.wait_for(1)
        assert released(message).called_ae_title == "HONEST-AI"

        wait_until(
            lambda: "set aside after 3 refusals" in gateway.log_text(), 30, "the event set aside"
        )
        _, metrics = gateway.http_get("/metrics")
        assert metric(metrics, "dicom_gateway_events_set_aside") == 1
        assert metric(metrics, "dicom_gateway_outbox_events") == 1

        # The operator removes the cause and restarts: the event is offered again, and goes.
        asyncio.run(delete_amqp_topology(ingest.amqp_url, ingest.exchange, [refusing]))
        gateway.stop()
        with ingest.events(["association.released.refused"]) as later:
            restarted = ingest.start(config)
            (message,) = later.wait_for(1)
        assert released(message).called_ae_title == "REFUSED-AI"
        assert "1 set-aside event(s) offered again" in restarted.log_text()
        wait_until_handed_on(ingest.workdir / "spool")
    finally:
        asyncio.run(delete_amqp_topology(ingest.amqp_url, ingest.exchange, [refusing]))


async def _declare_refusing_queue(ingest: Ingest, name: str, routing_key: str) -> None:
    connection = await aio_pika.connect(ingest.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            ingest.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            name, arguments={"x-max-length-bytes": 100, "x-overflow": "reject-publish"}
        )
        await queue.bind(exchange, routing_key)
