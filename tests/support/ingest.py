"""One end-to-end test's gateway set-up, and readers for what the gateway produced (objects in
the bucket, events on the exchange, files in the spool).

Every test that uses the ``ingest`` fixture runs twice: on RabbitMQ and S3, and on the embedded
defaults (local event log and file storage), which must behave the same. A test about one of
them only (a broker outage, say) says so with ``@pytest.mark.backends(RABBITMQ_S3)``;
:func:`parametrize_backends` reads that mark.
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from contracts import AssociationReleased, association_released_from_event, parse_event
from gateway_client.testing import (
    GatewayProcess,
    GatewayServices,
    Readiness,
    S3Service,
    delete_amqp_topology,
    delete_bucket,
    gateway_config,
)
from tests.support.amqp import EventCollector, ReceivedMessage
from tests.support.local_bus import LocalEventCollector

RABBITMQ_S3 = "rabbitmq-s3"
EMBEDDED = "embedded"
BACKENDS = (RABBITMQ_S3, EMBEDDED)


class GatewayFactory(Protocol):
    """What the ``gateway_factory`` fixture gives: start a gateway from a configuration."""

    def __call__(
        self, config: Mapping[str, Any], *, until: Readiness = "ready"
    ) -> GatewayProcess: ...


def released(message: ReceivedMessage) -> AssociationReleased:
    """The event's data, read through the contract a pipeline would use."""
    event = parse_event(message.body, content_type=message.content_type, headers=message.headers)
    return association_released_from_event(event)


def parametrize_backends(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``backend`` runs on each backend its ``backends`` mark names (all by
    default); for ``pytest_generate_tests``."""
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
        """The test's configuration (:func:`gateway_client.testing.gateway_config`), with
        ``ingest`` settings changed."""
        services = None if self.embedded else GatewayServices(self.amqp_url, self.s3)
        config = gateway_config(self.workdir, services, bucket=self.bucket, exchange=self.exchange)
        config["ingest"].update(ingest)
        return config

    def start(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        until: Readiness = "ready",
        **ingest: Any,
    ) -> GatewayProcess:
        """An ingest process on ``config`` (else :meth:`config` with ``ingest``), once it is
        ``until`` (``"listening"`` for a gateway that cannot become ready)."""
        chosen = copy.deepcopy(dict(config)) if config else self.config(**ingest)
        return self.factory(chosen, until=until)

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
        """Instance files in the spool (not the journal). The gateway removes files and
        directories while this looks: what vanishes meanwhile is not there (``os.walk``
        skips a directory it cannot list, where ``rglob`` raised)."""
        spool = self.workdir / "spool"
        return sorted(
            Path(parent) / name
            for directory in ("associations", "incoming")
            for parent, _, names in os.walk(spool / directory)
            for name in names
        )

    def delete_shared(self) -> None:
        """Delete what the test created on RabbitMQ and S3: its exchange and bucket (the
        export harness deletes its queues itself)."""
        if not self.embedded:
            asyncio.run(delete_amqp_topology(self.amqp_url, self.exchange, ()))
            delete_bucket(self.s3, self.bucket)
