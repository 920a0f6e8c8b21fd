"""What the client raises is what a pipeline catches under ``gateway_client``'s names.

Each failure is provoked for real (a port nobody answers on, a missing object, an export nobody
consumes) and caught by the name the client hands out, which is also a ``GatewayError``.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

import gateway_client
from contracts import AssociationReleased, association_released_routing_key
from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    association_released_event,
    to_structured,
)
from gateway.broker import AmqpPublisher
from gateway.bus import LocalPublisher, dead_letter_queue, open_event_log
from gateway_client import (
    BrokerSettings,
    ClientSettings,
    PipelineClient,
    ReceivedAssociation,
    StorageSettings,
)
from gateway_client.testing import GatewayServices

ASSOCIATION = "0b6c1f4e-2f4a-4a8e-9d55-1c2b3a4d5e6f"
KEY = f"{ASSOCIATION}/1.2/1.2.3/1.2.3.4.dcm"

Action = Callable[[PipelineClient], Awaitable[object]]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that refuses connections: bound here, never listened on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def local_settings(tmp_path: Path, **storage: object) -> ClientSettings:
    return ClientSettings(
        broker=BrokerSettings(event_log=tmp_path / "events.sqlite3"),
        storage=StorageSettings.model_validate({"path": tmp_path / "objects", **storage}),
    )


async def run(client: PipelineClient, action: Action) -> None:
    async with client:
        await action(client)


async def export_and_wait(client: PipelineClient) -> None:
    export_id = await client.request_export(destination="pacs", object_keys=[KEY])
    await client.wait_for_completion(export_id, timeout=0.2)


def raised(error: str, settings: ClientSettings, action: Action) -> None:
    """``action`` on a client with ``settings`` raises ``gateway_client.<error>``."""
    expected = getattr(gateway_client, error)
    with pytest.raises(expected) as caught:
        asyncio.run(run(PipelineClient(settings, name="tests"), action))
    assert isinstance(caught.value, gateway_client.GatewayError)


@pytest.mark.parametrize(
    ("error", "action"),
    [
        ("ObjectMissing", lambda client: client.read_object(KEY)),
        ("CompletionTimeout", export_and_wait),
    ],
)
def test_local_bus_and_file_storage(tmp_path: Path, error: str, action: Action) -> None:
    raised(error, local_settings(tmp_path), action)


def test_an_event_log_that_cannot_be_opened(tmp_path: Path) -> None:
    settings = ClientSettings(broker=BrokerSettings(event_log=tmp_path))  # a directory
    raised("BrokerUnavailable", settings, lambda client: asyncio.sleep(0))


def test_rabbitmq_not_answering(tmp_path: Path, silent_port: int) -> None:
    broker = BrokerSettings(url=f"amqp://guest:guest@127.0.0.1:{silent_port}/")
    settings = ClientSettings(broker=broker, storage=local_settings(tmp_path).storage)
    raised("BrokerUnavailable", settings, lambda client: asyncio.sleep(0))


@pytest.mark.parametrize(
    "action",
    [
        lambda client: client.read_object(KEY),
        lambda client: client.write_object(KEY, b"DICM"),
        lambda client: client.keys(ASSOCIATION),
    ],
    ids=["read", "write", "list"],
)
def test_s3_not_answering(tmp_path: Path, silent_port: int, action: Action) -> None:
    settings = local_settings(tmp_path, backend="s3", endpoint=f"127.0.0.1:{silent_port}")
    raised("StorageUnavailable", settings, action)


def test_an_s3_endpoint_that_is_not_host_and_port(tmp_path: Path) -> None:
    settings = local_settings(tmp_path, backend="s3", endpoint="http://minio:9000/")
    with pytest.raises(gateway_client.ConfigError, match="storage endpoint"):
        PipelineClient(settings, name="tests")


# --- on RabbitMQ ----------------------------------------------------------------------------


@pytest.fixture
def exchange(gateway_services: GatewayServices) -> Iterator[str]:
    """An exchange of this test's own, deleted afterwards with the queues the test names."""
    name = f"client-errors-{uuid.uuid4().hex[:12]}"
    yield name

    async def delete() -> None:
        connection = await aio_pika.connect(gateway_services.amqp_url)
        async with connection:
            channel = await connection.channel()
            for queue in (name, dead_letter_queue(name)):
                await channel.queue_delete(queue)
            await channel.exchange_delete(name)

    asyncio.run(delete())


def test_an_export_nobody_consumes(
    tmp_path: Path, gateway_services: GatewayServices, exchange: str
) -> None:
    broker = BrokerSettings(url=gateway_services.amqp_url, exchange=exchange)
    settings = ClientSettings(broker=broker, storage=local_settings(tmp_path).storage)
    raised("EventUnroutable", settings, export_and_wait)


@asynccontextmanager
async def publisher(broker: BrokerSettings) -> AsyncIterator[Callable[[bytes], Awaitable[None]]]:
    """Publishes an association-released event on the bus ``broker`` names."""
    key = association_released_routing_key("default")
    if broker.embedded:
        event_log = await asyncio.to_thread(open_event_log, broker)
        try:
            yield lambda body: LocalPublisher(event_log).publish(
                key, body, message_id=ASSOCIATION, content_type=CONTENT_TYPE_STRUCTURED
            )
        finally:
            event_log.close()
    else:
        amqp = AmqpPublisher(broker.url, broker.exchange, "client-errors tests")
        try:
            yield lambda body: amqp.publish(
                key, body, message_id=ASSOCIATION, content_type=CONTENT_TYPE_STRUCTURED
            )
        finally:
            await amqp.close()


def released_event() -> bytes:
    now = datetime.now(UTC)
    released = AssociationReleased(
        association_id=ASSOCIATION,
        called_ae_title="GATEWAY",
        calling_ae_title="MODALITY",
        remote_host="127.0.0.1",
        remote_port=40000,
        pipeline="default",
        started_at=now,
        released_at=now,
        instance_count=0,
        total_bytes=0,
        bucket="dicom-gateway",
        instances=(),
    )
    return to_structured(
        association_released_event(released, source="dicom-gateway://tests/GATEWAY", time=now)
    )


SETTLE: dict[str, Callable[[ReceivedAssociation], Awaitable[None]]] = {
    "ack": lambda received: received.ack(),
    "requeue": lambda received: received.requeue(0),
    "reject": lambda received: received.reject("tests"),
}


# "rabbitmq" is marked by hand: it requests gateway_services at run time, where the hook that
# marks integration tests cannot see it (tests.support.markers).
@pytest.fixture(params=[pytest.param("rabbitmq", marks=pytest.mark.integration), "local"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> BrokerSettings:
    """Each bus, with an exchange (and consumer name) of the test's own on RabbitMQ."""
    if request.param == "local":
        return BrokerSettings(event_log=tmp_path / "events.sqlite3")
    services: GatewayServices = request.getfixturevalue("gateway_services")
    return BrokerSettings(url=services.amqp_url, exchange=request.getfixturevalue("exchange"))


@pytest.mark.parametrize("settle", sorted(SETTLE))
def test_settling_once_the_client_is_closed(
    tmp_path: Path, broker: BrokerSettings, settle: str
) -> None:
    settings = ClientSettings(broker=broker, storage=local_settings(tmp_path).storage)

    async def scenario() -> None:
        client = PipelineClient(settings, name="tests")
        async with client, publisher(broker) as publish:
            subscription = await client.subscribe(consumer=broker.exchange)
            await publish(released_event())
            async with asyncio.timeout(10):
                received = await subscription.next()
        await SETTLE[settle](received)

    with pytest.raises(gateway_client.BrokerUnavailable):
        asyncio.run(scenario())
