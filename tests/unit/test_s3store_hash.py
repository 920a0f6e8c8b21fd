"""The S3 client signs with a SHA-256 it is given instead of hashing the payload again; this
depends on minio-py's ``_build_headers``, pinned here. A server's refusal of a body that does
not match that hash is told apart from an outage."""

from __future__ import annotations

import hashlib
import inspect
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from minio import Minio
from minio.credentials.credentials import Credentials

from gateway.errors import ObjectChanged, StorageUnavailable
from gateway.s3store import CONTENT_SHA256, KnownHashMinio, S3Store
from gateway.settings import StorageSettings

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


class _Refusing(BaseHTTPRequestHandler):
    """An S3 endpoint that answers every upload with the error code it is given."""

    code = ""

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{self.code}</Code>"
            "<Message>refused</Message><Resource>/dicom-gateway/k</Resource><RequestId>1</RequestId>"
            "</Error>"
        ).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test's output is what it asserts


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        ("XAmzContentSHA256Mismatch", ObjectChanged),  # the body is not the hash it was sent with
        ("BadDigest", ObjectChanged),
        ("SlowDown", StorageUnavailable),  # anything else may pass: retried
    ],
)
def test_a_body_refused_for_its_hash_is_not_taken_for_an_outage(
    code: str, raised: type[Exception]
) -> None:
    handler = type("Handler", (_Refusing,), {"code": code})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    access, secret = KEYS
    settings = StorageSettings(
        backend="s3",
        endpoint=f"127.0.0.1:{server.server_address[1]}",
        bucket="dicom-gateway",
        access_key=access,
        secret_key=secret,
        region="us-east-1",  # no location lookup: the upload is the only request
    )
    try:
        with pytest.raises(raised, match=code):
            S3Store(settings).put("k", io.BytesIO(PAYLOAD), len(PAYLOAD), sha256=KNOWN)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
