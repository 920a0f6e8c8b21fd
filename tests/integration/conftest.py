"""What the end-to-end ingest tests share: a gateway configuration per test, and readers for
what it produced (objects in the bucket, events on the exchange, files in the spool).

Every test that uses the ``ingest`` fixture runs twice: on RabbitMQ and S3, and on the embedded
defaults (local event log and file storage), which must behave the same. A test about one of
them only (a broker outage, say) says so with ``@pytest.mark.backends(RABBITMQ_S3)``.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from minio.deleteobjects import DeleteObject

from contracts import AssociationReleased, association_released_from_event, parse_event
from tests.support.amqp import EventCollector, ReceivedMessage
from tests.support.gateway import GatewayFactory, GatewayProcess, basic_config
from tests.support.local_bus import LocalEventCollector
from tests.support.net import free_port
from tests.support.services import S3Service


def released(message: ReceivedMessage) -> AssociationReleased:
    """The event's data, read through the contract a pipeline would use."""
    event = parse_event(message.body, content_type=message.content_type, headers=message.headers)
    return association_released_from_event(event)


RABBITMQ_S3 = "rabbitmq-s3"
EMBEDDED = "embedded"
BACKENDS = (RABBITMQ_S3, EMBEDDED)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("backend", marker.args if marker else BACKENDS)


@dataclass
class Ingest:
    """One test's ingest set-up: configuration, bucket and the helpers to look at results."""

    amqp_url: str
    s3: S3Service
    bucket: str
    workdir: Path
    factory: GatewayFactory
    backend: str = RABBITMQ_S3

    @property
    def embedded(self) -> bool:
        return self.backend == EMBEDDED

    @property
    def embedded_dir(self) -> Path:
        """The embedded backend's event log and object files (its "services")."""
        return self.workdir / "embedded"

    @property
    def event_log(self) -> Path:
        return self.embedded_dir / "events.sqlite3"

    @property
    def object_root(self) -> Path:
        """Where the embedded backend's file storage keeps this test's bucket."""
        return self.embedded_dir / "objects" / self.bucket

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
        if self.embedded:
            config["storage"] = {
                "backend": "file",
                "path": str(self.embedded_dir / "objects"),
                "bucket": self.bucket,
            }
            config["broker"] = {"url": "", "event_log": str(self.event_log)}
        return config

    def start(self, config: Mapping[str, Any] | None = None, **ingest: Any) -> GatewayProcess:
        return self.factory(copy.deepcopy(dict(config)) if config else self.config(**ingest))

    def events(
        self, binding_keys: Sequence[str] = ("association.released.#",)
    ) -> EventCollector | LocalEventCollector:
        if self.embedded:
            return LocalEventCollector(self.event_log, binding_keys)
        return EventCollector(self.amqp_url, exchange=self.exchange, binding_keys=binding_keys)

    def objects(self) -> dict[str, bytes]:
        if self.embedded:
            root = self.object_root
            return {
                p.relative_to(root).as_posix(): p.read_bytes()
                for p in (root.rglob("*") if root.exists() else ())
                if p.is_file()
            }
        client = self.s3.client()
        if not client.bucket_exists(self.bucket):
            return {}
        names = [item.object_name for item in client.list_objects(self.bucket, recursive=True)]
        return self.objects_named([name for name in names if name is not None])

    def objects_named(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Only these objects (each must exist)."""
        if self.embedded:
            return {key: (self.object_root / key).read_bytes() for key in keys}
        client = self.s3.client()
        result = {}
        for key in keys:
            response = client.get_object(self.bucket, key)
            try:
                result[key] = response.read()
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
def ingest(  # noqa: PLR0917 (pytest passes fixtures by name)
    amqp_url: str,
    s3_service: S3Service,
    bucket_name: str,
    tmp_path: Path,
    gateway_factory: GatewayFactory,
    backend: str,
) -> Iterator[Ingest]:
    harness = Ingest(amqp_url, s3_service, bucket_name, tmp_path, gateway_factory, backend)
    yield harness
    if not harness.embedded:
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
