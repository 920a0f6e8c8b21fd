"""The two ways the gateway runs: on RabbitMQ + S3, and on the embedded defaults.

A backend writes the ``[storage]`` and ``[broker]`` part of a gateway's configuration, opens a
:class:`~bench.events.Bus` on the same bus, reads back what was stored, and removes it again:
every run gets a bucket of its own (SeaweedFS gives each bucket volumes of its own, so they are
deleted at the end of the run) and every benchmark one exchange of its own.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from bench.events import AmqpBus, Bus, LocalLogBus
from gateway.bus import dead_letter_queue
from gateway_client.testing import (
    S3Service,
    TestServices,
    delete_amqp_topology,
    delete_bucket,
    wait_for_amqp,
    wait_for_s3,
)
from tests.support.factories import dataset_digest

#: Objects are read back (for the byte comparison) by this many threads.
_READERS = 8


class Backend(Protocol):
    key: str
    #: what it runs on, e.g. "RabbitMQ + S3"
    services: str

    @property
    def label(self) -> str: ...

    def config(self, directory: Path, bucket: str) -> dict[str, Any]:
        """The ``storage`` and ``broker`` tables of a gateway configuration."""
        ...

    def prepare(self, directory: Path, bucket: str) -> None:
        """Make the storage ready before the gateway starts."""
        ...

    def bus(self, directory: Path, binding: str) -> Bus: ...

    def digests(self, directory: Path, bucket: str, keys: Iterable[str]) -> list[str]:
        """The data set digest of each stored object, in the order of ``keys``."""
        ...

    def read(self, directory: Path, bucket: str, key: str) -> bytes:
        """One stored object (an instance manifest)."""
        ...

    def delete(self, directory: Path, bucket: str) -> None:
        """Remove what the run stored."""
        ...

    def close(self, queues: Iterable[str]) -> None:
        """Remove what the benchmark declared on the bus (the exchange, ``queues``)."""
        ...


def new_bucket(stem: str) -> str:
    """A valid, unique bucket name (lower case letters, digits, hyphens)."""
    return f"bench-{stem}-{secrets.token_hex(3)}"[:63]


class Embedded:
    """File storage and the local event log, under the run's directory."""

    key = "embedded"
    services = "embedded"
    label = f"gateway, {services}"

    def config(self, directory: Path, bucket: str) -> dict[str, Any]:
        return {
            "storage": {"backend": "file", "path": str(directory / "objects"), "bucket": bucket},
            "broker": {"url": "", "event_log": str(directory / "events.sqlite3")},
        }

    def prepare(self, directory: Path, bucket: str) -> None:
        return None

    def bus(self, directory: Path, binding: str) -> Bus:
        return LocalLogBus(directory / "events.sqlite3", binding)

    def digests(self, directory: Path, bucket: str, keys: Iterable[str]) -> list[str]:
        root = directory / "objects" / bucket

        def digest(key: str) -> str:
            with (root / key).open("rb") as stream:
                return dataset_digest(stream)[0]

        with ThreadPoolExecutor(_READERS) as pool:
            return list(pool.map(digest, keys))

    def read(self, directory: Path, bucket: str, key: str) -> bytes:
        return (directory / "objects" / bucket / key).read_bytes()

    def delete(self, directory: Path, bucket: str) -> None:
        shutil.rmtree(directory / "objects" / bucket, ignore_errors=True)

    def close(self, queues: Iterable[str]) -> None:
        return None


class RabbitMqS3:
    """RabbitMQ and an S3 service, one exchange per benchmark and one bucket per run."""

    key = "rabbitmq-s3"
    services = "RabbitMQ + S3"
    label = f"gateway, {services}"

    def __init__(self, amqp_url: str, s3: S3Service) -> None:
        self.amqp_url = amqp_url
        self.s3 = s3
        self.exchange = f"dicom-gateway-bench.{secrets.token_hex(4)}"

    @classmethod
    def from_environment(cls) -> RabbitMqS3 | str:
        """The backend from the ``GATEWAY_TEST_*`` variables, or why there is none."""
        found = TestServices()
        if found.amqp_url is None or found.s3_endpoint is None:
            return "GATEWAY_TEST_AMQP_URL and GATEWAY_TEST_S3_* are not set"
        if found.s3_access_key is None or found.s3_secret_key is None:
            return "GATEWAY_TEST_S3_ACCESS_KEY and GATEWAY_TEST_S3_SECRET_KEY are not set"
        s3 = S3Service(found.s3_endpoint, found.s3_access_key, found.s3_secret_key)
        wait_for_amqp(found.amqp_url, timeout=20)
        wait_for_s3(s3, timeout=20)
        return cls(found.amqp_url, s3)

    def config(self, directory: Path, bucket: str) -> dict[str, Any]:
        return {
            "storage": {
                "backend": "s3",
                "endpoint": self.s3.endpoint,
                "bucket": bucket,
                "access_key": self.s3.access_key,
                "secret_key": self.s3.secret_key,
                "secure": self.s3.secure,
            },
            "broker": {"url": self.amqp_url, "exchange": self.exchange},
        }

    def prepare(self, directory: Path, bucket: str) -> None:
        """Create the bucket and write to it once: SeaweedFS allocates a bucket's volumes on
        its first write, which takes up to a second and is no part of the gateway's work."""
        client = self.s3.client()
        client.make_bucket(bucket)
        client.put_object(bucket, "warm-up", io.BytesIO(b"warm-up"), 7)
        client.remove_object(bucket, "warm-up")

    def bus(self, directory: Path, binding: str) -> Bus:
        return AmqpBus(self.amqp_url, self.exchange, binding)

    def digests(self, directory: Path, bucket: str, keys: Iterable[str]) -> list[str]:
        client = self.s3.client()

        def digest(key: str) -> str:
            response = client.get_object(bucket, key)
            try:
                return dataset_digest(cast(BinaryIO, response))[0]
            finally:
                response.close()
                response.release_conn()

        with ThreadPoolExecutor(_READERS) as pool:
            return list(pool.map(digest, keys))

    def read(self, directory: Path, bucket: str, key: str) -> bytes:
        response = self.s3.client().get_object(bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def delete(self, directory: Path, bucket: str) -> None:
        delete_bucket(self.s3, bucket)

    def close(self, queues: Iterable[str]) -> None:
        asyncio.run(delete_amqp_topology(self.amqp_url, self.exchange, list(queues)))


def export_queues(queue: str) -> Iterator[str]:
    """The queues the export service declares for ``queue``."""
    yield queue
    yield dead_letter_queue(queue)
