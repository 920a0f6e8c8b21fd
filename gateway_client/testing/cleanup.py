"""Names of a test's own on shared services, and what deletes them again.

Tests run side by side on one RabbitMQ and one S3, so each gateway under test gets a bucket
whose name says which test it belongs to, and an exchange and queues derived from it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

import aio_pika
from minio.deleteobjects import DeleteObject

from gateway_client.testing.services import S3Service

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def bucket_name_for(test_name: str) -> str:
    """A fresh, valid S3 bucket name that says which test it belongs to."""
    suffix = secrets.token_hex(3)
    stem = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
    stem = stem[: 63 - len(suffix) - 3].rstrip("-") or "test"
    name = f"t-{stem}-{suffix}"
    if not is_valid_bucket_name(name):
        raise ValueError(f"derived an invalid bucket name {name!r} from {test_name!r}")
    return name


def is_valid_bucket_name(name: str) -> bool:
    """The S3 general-purpose bucket naming rules (the subset a derived name can break)."""
    return (
        bool(_BUCKET_NAME.match(name))
        and ".." not in name
        and not _IP_ADDRESS.match(name)
        and not name.startswith(("xn--", "sthree-"))
        and not name.endswith(("-s3alias", "--ol-s3"))
    )


def delete_bucket(s3: S3Service, bucket: str) -> None:
    """Delete ``bucket`` and everything in it (SeaweedFS gives each bucket volumes of its own,
    and gives them back only when the bucket goes)."""
    client = s3.client()
    if not client.bucket_exists(bucket):
        return
    names = [o.object_name for o in client.list_objects(bucket, recursive=True) if o.object_name]
    errors = list(client.remove_objects(bucket, [DeleteObject(name) for name in names]))
    if errors:
        raise RuntimeError(f"could not empty bucket {bucket}: {errors}")
    client.remove_bucket(bucket)


async def delete_amqp_topology(url: str, exchange: str, queues: Iterable[str]) -> None:
    """Delete ``queues`` and ``exchange``; names that do not exist are no error in RabbitMQ."""
    connection = await aio_pika.connect(
        url, client_properties={"connection_name": "tests: clean-up"}
    )
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
