"""What the end-to-end ingest tests share: a gateway configuration per test, and readers for
what it produced (objects in the bucket, events on the exchange, files in the spool)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from minio.deleteobjects import DeleteObject

from contracts import AssociationReleased, association_released_from_event, parse_event
from tests.support.amqp import EventCollector, ReceivedMessage
from tests.support.gateway import GatewayFactory, GatewayProcess, basic_config
from tests.support.net import free_port
from tests.support.services import S3Service


def released(message: ReceivedMessage) -> AssociationReleased:
    """The event's data, read through the contract a pipeline would use."""
    event = parse_event(message.body, content_type=message.content_type, headers=message.headers)
    return association_released_from_event(event)


@dataclass
class Ingest:
    """One test's ingest set-up: configuration, bucket and the helpers to look at results."""

    amqp_url: str
    s3: S3Service
    bucket: str
    workdir: Path
    factory: GatewayFactory

    @property
    def exchange(self) -> str:
        """An exchange of this test's own, so that no other test's events can reach it."""
        return f"dicom-gateway.{self.bucket}"

    def config(self, **ingest: Any) -> dict[str, Any]:
        config = basic_config(
            port=free_port(),
            spool_dir=self.workdir / "spool",
            amqp_url=self.amqp_url,
            s3=self.s3,
            bucket=self.bucket,
        )
        config["ingest"].update(ingest)
        config["broker"]["exchange"] = self.exchange
        return config

    def start(self, config: Mapping[str, Any] | None = None, **ingest: Any) -> GatewayProcess:
        return self.factory(copy.deepcopy(dict(config)) if config else self.config(**ingest))

    def events(self, binding_keys: tuple[str, ...] = ("association.released.#",)) -> EventCollector:
        return EventCollector(self.amqp_url, exchange=self.exchange, binding_keys=binding_keys)

    def objects(self) -> dict[str, bytes]:
        client = self.s3.client()
        if not client.bucket_exists(self.bucket):
            return {}
        result = {}
        for item in client.list_objects(self.bucket, recursive=True):
            assert item.object_name is not None
            response = client.get_object(self.bucket, item.object_name)
            try:
                result[item.object_name] = response.read()
            finally:
                response.close()
                response.release_conn()
        return result

    def spool_files(self) -> list[Path]:
        """Instance files in the spool (not the journal)."""
        spool = self.workdir / "spool"
        return sorted(
            p
            for directory in ("associations", "incoming")
            if (spool / directory).exists()
            for p in (spool / directory).rglob("*")
            if p.is_file()
        )


@pytest.fixture
def ingest(
    amqp_url: str,
    s3_service: S3Service,
    bucket_name: str,
    tmp_path: Path,
    gateway_factory: GatewayFactory,
) -> Iterator[Ingest]:
    harness = Ingest(amqp_url, s3_service, bucket_name, tmp_path, gateway_factory)
    yield harness
    asyncio.run(_delete_exchange(amqp_url, harness.exchange))
    _delete_bucket(s3_service, bucket_name)


def _delete_bucket(s3: S3Service, bucket: str) -> None:
    """SeaweedFS gives each bucket volumes of its own; deleting it gives them back."""
    client = s3.client()
    if not client.bucket_exists(bucket):
        return
    names = [o.object_name for o in client.list_objects(bucket, recursive=True) if o.object_name]
    errors = list(client.remove_objects(bucket, [DeleteObject(name) for name in names]))
    assert not errors, errors
    client.remove_bucket(bucket)


async def _delete_exchange(amqp_url: str, exchange: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(exchange)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """A directory for the test's generated DICOM files."""
    directory = tmp_path / "in"
    directory.mkdir()
    return directory
