"""The S3 store against a real S3 server: an upload signed with the SHA-256 its caller knows,
not hashed again, is accepted and stored byte for byte."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import pytest

from gateway.s3store import S3Store
from gateway.settings import StorageSettings
from gateway_client.testing.cleanup import delete_bucket
from tests.support.services import S3Service

PAYLOAD = b"\0" * 128 + b"DICM" + bytes(range(256)) * 40


@pytest.fixture
def store(s3_service: S3Service, bucket_name: str) -> Iterator[S3Store]:
    settings = StorageSettings(
        backend="s3",
        endpoint=s3_service.endpoint,
        bucket=bucket_name,
        access_key=s3_service.access_key,
        secret_key=s3_service.secret_key,
        secure=s3_service.secure,
    )
    store = S3Store(settings)
    store.ensure_ready()
    yield store
    delete_bucket(s3_service, bucket_name)


def test_an_upload_with_its_known_hash_is_stored_byte_for_byte(
    store: S3Store, s3_service: S3Service, bucket_name: str
) -> None:
    sha256 = hashlib.sha256(PAYLOAD).hexdigest()
    store.put("a/b/c/d.dcm", io.BytesIO(PAYLOAD), len(PAYLOAD), sha256=sha256)
    response = s3_service.client().get_object(bucket_name, "a/b/c/d.dcm")
    try:
        assert response.read() == PAYLOAD
    finally:
        response.close()
        response.release_conn()


def test_an_object_up_to_the_part_size_goes_in_one_request(
    store: S3Store, s3_service: S3Service, bucket_name: str
) -> None:
    """Between minio-py's minimum part size (5 MiB) and ours, minio-py split an object into
    parts when left to choose, and the known hash of the whole object went with the request
    that starts a multipart upload, whose body is empty."""
    payload = bytes(range(256)) * (6 * 1024 * 4)  # 6 MiB
    store.put("a/b/c/f.dcm", io.BytesIO(payload), len(payload), sha256=sha256_of(payload))
    etag = s3_service.client().stat_object(bucket_name, "a/b/c/f.dcm").etag
    assert "-" not in (etag or ""), f"stored in parts (ETag {etag})"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
