"""The S3 object store (MinIO in production), through minio-py.

minio-py is synchronous and thread-safe, so the store is called from worker threads. Every
library error is converted to :class:`StorageUnavailable` here, which callers retry, except
the few answers that say retrying cannot help (:class:`ObjectMissing`, :class:`ObjectChanged`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.credentials.credentials import Credentials
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from gateway.errors import (
    ConfigError,
    ObjectChanged,
    ObjectMissing,
    StorageUnavailable,
    WorkingSpaceFull,
)
from gateway.objectstore import DICOM_MEDIA_TYPE, RETENTION_RULE_ID, Readable, is_disk_full
from gateway.settings import StorageSettings

log = logging.getLogger(__name__)

#: Multipart uploads above this size. minio-py holds each part in memory (and a copy while it
#: signs it), so part size times parallel parts is what one large upload costs in memory.
PART_SIZE = 8 * 1024 * 1024
PARALLEL_PARTS = 2
#: Multipart uploads at once over the whole store. The uploader sends several instances in
#: parallel; without this bound, as many large instances would each hold their parts in memory
#: (4 x 100 MB instances peaked at 207 MB RSS; one at a time: 115 MB, at the same MB/s received).
MULTIPART_UPLOADS = 1
#: Single-part uploads are held in memory whole (and copied while signed): those above
#: LARGE_SINGLE_PART bytes go this many at a time, so that the uploader's 8 threads on
#: objects just under PART_SIZE stay near what 4 threads took before, not twice that.
LARGE_SINGLE_PART = 1024 * 1024
LARGE_SINGLE_UPLOADS = 4
_MISSING = frozenset({"NoSuchKey", "NoSuchObject"})
#: S3's answers to a request whose credentials it does not accept (AccessDenied: accepted, but
#: not allowed this bucket or operation).
CREDENTIALS_REFUSED = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken", "ExpiredToken"}
)
#: S3's answers to a body that does not match its SigV4 payload hash or its Content-MD5.
_BODY_DIFFERS = frozenset({"XAmzContentSHA256Mismatch", "BadDigest"})
DOWNLOAD_CHUNK = 1024 * 1024
#: The SigV4 header that carries the payload's SHA-256 (the server checks the body against it).
CONTENT_SHA256 = "x-amz-content-sha256"


class KnownHashMinio(Minio):
    """minio-py's client, signing a payload whose SHA-256 is given instead of hashing it.

    Over plain HTTP minio-py hashes every request body for its signature: a second pass over
    each object (about 40 % of the upload threads' client CPU), when ingest knows the object's
    hash already from receiving it. A request whose headers carry
    :data:`CONTENT_SHA256` is signed with that value. A server that checks the body against it
    (AWS S3 documents that it does) refuses a spool file that changed on disk since it was
    received (:class:`ObjectChanged`: the uploader sets the association aside instead of
    retrying); SeaweedFS, the tests' server, does not check. Over HTTPS minio-py signs
    ``UNSIGNED-PAYLOAD`` and hashes nothing, as before. Only single-part uploads pass the
    header (:meth:`S3Store.put`); a test pins this to minio-py's ``_build_headers``
    (tests/unit/test_s3store_hash.py).
    """

    def _build_headers(
        self,
        host: str,
        headers: dict[str, Any] | None = None,
        body: bytes | None = None,
        creds: Credentials | None = None,
    ) -> tuple[dict[str, Any], datetime]:
        known = None if headers is None else headers.get(CONTENT_SHA256)
        if known is None or creds is None or self._base_url.is_https:
            return super()._build_headers(host, headers, body, creds)
        built, date = super()._build_headers(host, headers, None, creds)
        if body:
            built["Content-Length"] = str(len(body))
        built[CONTENT_SHA256] = known
        return built, date


def failure_summary(exc: Exception, endpoint: str, access_key: str) -> str:
    """Why a request to S3 failed, for an operator: refused credentials and a server that
    cannot be reached are said as such (minio-py's text buries them in request details)."""
    if isinstance(exc, S3Error) and exc.code in CREDENTIALS_REFUSED:
        check = "storage.access_key and storage.secret_key"
        if exc.code == "AccessDenied":
            check += ", and what the key may do with the bucket"
        return (
            f"S3 at {endpoint} refused the credentials of access key {access_key!r} "
            f"({exc.code}): check {check}"
        )
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return f"S3 at {endpoint} not reachable: {exc.reason}"
    return str(exc)


class S3Store:
    def __init__(self, settings: StorageSettings) -> None:
        # Retries are ours (with backoff, in the uploader); the SDK must fail fast.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0),
            maxsize=16,
        )
        try:
            self._client = KnownHashMinio(
                settings.endpoint,
                access_key=settings.access_key,
                secret_key=settings.secret_key,
                secure=settings.secure,
                region=settings.region,
                http_client=http,
            )
        except ValueError as exc:  # an endpoint that is not host:port, say
            raise ConfigError(f"storage endpoint {settings.endpoint!r}: {exc}") from exc
        self._bucket = settings.bucket
        self._endpoint = settings.endpoint
        self._access_key = settings.access_key
        self._multipart = threading.BoundedSemaphore(MULTIPART_UPLOADS)
        self._large_single = threading.BoundedSemaphore(LARGE_SINGLE_UPLOADS)

    @property
    def bucket(self) -> str:
        return self._bucket

    def _failed(self, doing: str, exc: Exception) -> StorageUnavailable:
        return StorageUnavailable(
            f"{doing}: {failure_summary(exc, self._endpoint, self._access_key)}"
        )

    def ensure_ready(self) -> None:
        try:
            if not self._client.bucket_exists(self._bucket):
                self._client.make_bucket(self._bucket)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._failed(f"bucket {self._bucket}", exc) from exc

    def put(
        self,
        key: str,
        data: Readable,
        length: int,
        *,
        sha256: str | None = None,
        content_type: str = DICOM_MEDIA_TYPE,
    ) -> None:
        multipart = length > PART_SIZE
        if multipart:
            bound: contextlib.AbstractContextManager[object] = self._multipart
        elif length > LARGE_SINGLE_PART:
            bound = self._large_single
        else:
            bound = contextlib.nullcontext()
        try:
            with bound:
                self._client.put_object(
                    self._bucket,
                    key,
                    cast(BinaryIO, data),  # minio only ever calls read(size)
                    length,
                    content_type=content_type,
                    metadata=None if sha256 is None or multipart else {CONTENT_SHA256: sha256},
                    # Always given: left to choose (0), minio-py splits objects above its own
                    # 5 MiB minimum, so those up to PART_SIZE went in parts too, outside the
                    # bounds above and with the whole object's hash on the starting request.
                    part_size=PART_SIZE,
                    num_parallel_uploads=PARALLEL_PARTS,
                )
        except S3Error as exc:
            if exc.code in _BODY_DIFFERS:
                raise ObjectChanged(
                    f"upload of {key} refused: its bytes are not those received ({exc.code})"
                ) from exc
            raise self._failed(f"upload of {key} failed", exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise self._failed(f"upload of {key} failed", exc) from exc

    def download(self, key: str, target: Path) -> None:
        # One GET, streamed to the file: minio-py's fget_object asks for the object's metadata
        # first, a second round trip that took 500 CT slices from 1.0 s to 1.6 s (8 at a time).
        # A body cut short raises (urllib3 checks its length against Content-Length).
        response = None
        try:
            response = self._client.get_object(self._bucket, key)
            with target.open("wb") as file:
                for chunk in response.stream(DOWNLOAD_CHUNK):
                    file.write(chunk)
        except OSError as exc:
            if is_disk_full(exc):
                raise WorkingSpaceFull(f"downloading {key} to {target}: {exc}") from exc
            raise StorageUnavailable(f"download of {key} failed: {exc}") from exc
        except S3Error as exc:
            if exc.code in _MISSING:
                raise ObjectMissing(f"no object {key} in bucket {self._bucket}") from exc
            raise self._failed(f"download of {key} failed", exc) from exc
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._failed(f"download of {key} failed", exc) from exc
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def keys(self, prefix: str) -> list[str]:
        try:
            return sorted(
                item.object_name
                for item in self._client.list_objects(self._bucket, prefix=prefix, recursive=True)
                if item.object_name is not None
            )
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._failed(f"listing {prefix} failed", exc) from exc

    def apply_retention(self, days: int | None) -> int:
        try:
            current = self._client.get_bucket_lifecycle(self._bucket)
            rules = [] if current is None else list(current.rules)
            wanted = retention_rules(rules, days)
            if _described(wanted) == _described(rules):
                return 0
            if wanted:
                self._client.set_bucket_lifecycle(self._bucket, LifecycleConfig(wanted))
            else:
                self._client.delete_bucket_lifecycle(self._bucket)
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise StorageUnavailable(f"lifecycle of bucket {self._bucket}: {exc}") from exc
        log.info(
            "bucket %s: objects %s",
            self._bucket,
            "kept for ever" if days is None else f"expire {days} days after they are stored",
        )
        return 0

    def remove_prefix(self, prefix: str) -> int:
        keys = self.keys(prefix)
        if not keys:
            return 0
        try:
            # remove_objects is lazy: the deletes happen while its errors are read.
            errors = list(
                self._client.remove_objects(self._bucket, (DeleteObject(key) for key in keys))
            )
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._failed(f"removing {prefix} failed", exc) from exc
        if errors:
            raise StorageUnavailable(
                f"removing {prefix}: {len(errors)} of {len(keys)} objects not deleted, "
                f"e.g. {errors[0].name}: {errors[0].message}"
            )
        return len(keys)


def retention_rules(rules: list[Rule], days: int | None) -> list[Rule]:
    """A bucket's lifecycle ``rules`` with the gateway's expiration rule as ``days`` wants it
    (removed for None); the others as they were."""
    kept = [rule for rule in rules if rule.rule_id != RETENTION_RULE_ID]
    if days is None:
        return kept
    return [
        *kept,
        Rule(
            ENABLED,
            rule_filter=Filter(prefix=""),
            rule_id=RETENTION_RULE_ID,
            expiration=Expiration(days=days),
        ),
    ]


def _described(rules: list[Rule]) -> list[tuple[str, int]]:
    """What tells two rule lists apart for this store: each rule's id and expiration days."""
    return sorted(
        (str(rule.rule_id), -1 if rule.expiration is None else rule.expiration.days or -1)
        for rule in rules
    )
