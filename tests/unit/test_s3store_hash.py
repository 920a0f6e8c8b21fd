"""The S3 client signs with a SHA-256 it is given instead of hashing the payload again; this
depends on minio-py's ``_build_headers``, pinned here."""

from __future__ import annotations

import hashlib
import inspect

import pytest
from minio import Minio
from minio.credentials.credentials import Credentials

from gateway.s3store import CONTENT_SHA256, KnownHashMinio

PAYLOAD = b"DICM and a data set"
KNOWN = "ab" * 32  # not the payload's hash: shows that the given value is used
KEYS = ("test-access", "test-" + "secret")  # no service is reached: nothing is sent
CREDS = Credentials(*KEYS)


def _client(secure: bool = False) -> KnownHashMinio:
    access, secret = KEYS
    return KnownHashMinio("127.0.0.1:9000", access_key=access, secret_key=secret, secure=secure)


def test_minio_builds_headers_as_this_override_expects() -> None:
    parameters = list(inspect.signature(Minio._build_headers).parameters)
    assert parameters == ["self", "host", "headers", "body", "creds"]


def test_a_given_hash_signs_the_payload_without_hashing_it() -> None:
    headers, _ = _client()._build_headers("s3", {CONTENT_SHA256: KNOWN}, PAYLOAD, CREDS)
    assert headers[CONTENT_SHA256] == KNOWN
    assert headers["Content-Length"] == str(len(PAYLOAD))


@pytest.mark.parametrize(
    ("secure", "given", "expected"),
    [
        (False, None, hashlib.sha256(PAYLOAD).hexdigest()),  # minio-py hashes, as before
        (True, None, "UNSIGNED-PAYLOAD"),
        (True, KNOWN, "UNSIGNED-PAYLOAD"),  # over TLS nothing is hashed anyway
    ],
)
def test_otherwise_minio_signs_as_it_always_did(
    secure: bool, given: str | None, expected: str
) -> None:
    headers = {} if given is None else {CONTENT_SHA256: given}
    built, _ = _client(secure)._build_headers("s3", headers, PAYLOAD, CREDS)
    assert built[CONTENT_SHA256] == expected
