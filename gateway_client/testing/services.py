"""RabbitMQ and S3 for a gateway under test, and the test environment's settings.

:func:`gateway_services` finds them in this order: the ``GATEWAY_TEST_*`` environment
variables (:class:`TestServices`); otherwise containers started with testcontainers (RabbitMQ
and MinIO, pinned images) when a Docker engine answers; otherwise :class:`ServicesUnavailable`
says which variables to set. Either way a service must answer its own protocol (an AMQP
handshake, a signed S3 ``ListBuckets``) before it is handed out.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

import aio_pika
import urllib3
from aio_pika.exceptions import AMQPError
from minio import Minio
from minio.error import MinioException
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from gateway_client.testing.polling import wait_until

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

RABBITMQ_IMAGE: Final = "rabbitmq:3.13.7-alpine"
MINIO_IMAGE: Final = "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
ENVIRONMENT_HELP: Final = (
    "set GATEWAY_TEST_AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/) and "
    "GATEWAY_TEST_S3_ENDPOINT (host:port), GATEWAY_TEST_S3_ACCESS_KEY, "
    "GATEWAY_TEST_S3_SECRET_KEY, or make a Docker engine available for testcontainers"
)
#: How long a service may take to answer before the test environment is broken.
SERVICE_TIMEOUT_SECONDS: Final = 60.0


class ServicesUnavailable(RuntimeError):
    """RabbitMQ or S3 is not configured, cannot be started, or does not answer."""


class TestServices(BaseSettings):
    """The test environment, read once: the only place that looks at ``GATEWAY_TEST_*``."""

    __test__: ClassVar[bool] = False  # a settings model, not a test class for pytest to collect

    model_config = SettingsConfigDict(env_prefix="GATEWAY_TEST_", env_ignore_empty=True)

    amqp_url: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    #: The gateway's ``netdicom`` setting ("prompt" or "plain") for every gateway under test;
    #: unset, the gateway's own default.
    netdicom: str | None = None
    #: The seed of the tests that draw random ones, to replay a failure; unset, a fresh one.
    seed: int | None = None
    #: Fail, rather than skip, the tests that need the power-loss file system (FUSE) where it
    #: cannot run: CI sets it, so that a missing package cannot pass for a skipped suite.
    fuse_required: bool = False
    #: Power cuts per run of the power-loss suite; unset, its short run (a release check
    #: runs many more: docs/reliability.md).
    power_cuts: int | None = None


@dataclass(frozen=True)
class S3Service:
    """An S3-compatible object store the tests may create buckets in."""

    endpoint: str
    access_key: str
    secret_key: str
    secure: bool = False

    def client(self, **kwargs: Any) -> Minio:
        """A minio client for this service; ``kwargs`` go to :class:`minio.Minio`."""
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
            **kwargs,
        )


@dataclass(frozen=True)
class GatewayServices:
    """What a gateway under test runs against."""

    amqp_url: str
    s3: S3Service


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url


# --- readiness ----------------------------------------------------------------------------


def amqp_answers(url: str) -> bool:
    """True if an AMQP connection to ``url`` can be opened (and closed) right now."""

    async def handshake() -> None:
        connection = await aio_pika.connect(
            url, timeout=3, client_properties={"connection_name": "tests: readiness probe"}
        )
        await connection.close()

    try:
        asyncio.run(handshake())
    except (AMQPError, OSError):  # refused, reset, timed out (TimeoutError is an OSError)
        return False
    return True


def s3_answers(service: S3Service) -> bool:
    """True if a signed ``ListBuckets`` succeeds right now."""
    # No retries in the probe: the deadline around it decides how long to keep trying.
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=2, read=5), retries=urllib3.Retry(total=0)
    )
    try:
        service.client(http_client=http).list_buckets()
    except (MinioException, urllib3.exceptions.HTTPError, OSError):
        return False
    finally:
        http.clear()
    return True


def wait_for_amqp(url: str, timeout: float = SERVICE_TIMEOUT_SECONDS) -> None:
    try:
        wait_until(lambda: amqp_answers(url), timeout, "RabbitMQ", interval=0.2)
    except TimeoutError:
        raise ServicesUnavailable(
            f"RabbitMQ at {redacted(url)} does not accept AMQP connections after {timeout:g} s"
        ) from None


def wait_for_s3(service: S3Service, timeout: float = SERVICE_TIMEOUT_SECONDS) -> None:
    try:
        wait_until(lambda: s3_answers(service), timeout, "S3", interval=0.2)
    except TimeoutError:
        raise ServicesUnavailable(
            f"S3 at {service.endpoint} does not answer a signed ListBuckets with access key "
            f"{service.access_key!r} after {timeout:g} s (wrong keys fail the same way)"
        ) from None


# --- the services -------------------------------------------------------------------------


@contextmanager
def amqp_service(settings: TestServices) -> Iterator[str]:
    """Yield the AMQP URL of a RabbitMQ that answers; a container lives as long as the block."""
    if settings.amqp_url is not None:
        wait_for_amqp(settings.amqp_url)
        yield settings.amqp_url
        return
    _require_docker("GATEWAY_TEST_AMQP_URL")
    # Imported here, only when needed: testcontainers is a test extra, and pulls in pika.
    from testcontainers.community.rabbitmq import RabbitMqContainer  # noqa: PLC0415

    with RabbitMqContainer(RABBITMQ_IMAGE) as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        url = f"amqp://{container.username}:{container.password}@{host}:{port}/"
        wait_for_amqp(url)
        yield url


@contextmanager
def s3_service(settings: TestServices) -> Iterator[S3Service]:
    """Yield an S3 service that answers; a container lives as long as the block."""
    configured = (settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key)
    if any(value is not None for value in configured):
        endpoint, access_key, secret_key = configured
        if endpoint is None or access_key is None or secret_key is None:
            raise ServicesUnavailable(
                "GATEWAY_TEST_S3_ENDPOINT, GATEWAY_TEST_S3_ACCESS_KEY and "
                "GATEWAY_TEST_S3_SECRET_KEY must be set together"
            )
        service = S3Service(endpoint, access_key, secret_key)
        wait_for_s3(service)
        yield service
        return
    _require_docker("GATEWAY_TEST_S3_ENDPOINT")
    from testcontainers.community.minio import MinioContainer  # noqa: PLC0415

    access_key, secret_key = "gateway-tests", secrets.token_hex(16)
    container: DockerContainer = MinioContainer(
        MINIO_IMAGE, access_key=access_key, secret_key=secret_key
    )
    # The wrapper sets only MINIO_ACCESS_KEY/MINIO_SECRET_KEY, which current MinIO ignores.
    container.with_env("MINIO_ROOT_USER", access_key).with_env("MINIO_ROOT_PASSWORD", secret_key)
    with container:
        service = S3Service(
            f"{container.get_container_host_ip()}:{container.get_exposed_port(9000)}",
            access_key,
            secret_key,
        )
        wait_for_s3(service)
        yield service


@contextmanager
def gateway_services(settings: TestServices) -> Iterator[GatewayServices]:
    """RabbitMQ and S3 (see the module docstring), for as long as the block runs."""
    with amqp_service(settings) as amqp_url, s3_service(settings) as s3:
        yield GatewayServices(amqp_url, s3)


def docker_available() -> bool:
    """True if a Docker engine answers ``GET /_ping`` at DOCKER_HOST or the default socket.

    Asked directly rather than through the docker SDK, whose client leaks its socket when the
    engine is missing (an unraisable ResourceWarning, which strict test suites make an error).
    """
    if os.environ.get("DOCKER_TLS_VERIFY"):
        return True  # a TLS engine: let testcontainers, which speaks TLS, find out
    target = urllib.parse.urlsplit(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    address: str | tuple[str, int]
    if target.scheme == "unix":
        family, address = socket.AF_UNIX, target.path
    elif target.scheme in ("tcp", "http") and target.hostname:
        family, address = socket.AF_INET, (target.hostname, target.port or 2375)
    else:
        return True  # ssh:// and the like: let testcontainers find out
    try:
        with socket.socket(family, socket.SOCK_STREAM) as connection:
            connection.settimeout(5)
            connection.connect(address)
            connection.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = connection.recv(1024).split(b"\r\n", 1)[0]
    except OSError:
        return False
    return status_line.startswith(b"HTTP/") and b" 200 " in status_line + b" "


def _require_docker(variable: str) -> None:
    if not docker_available():
        raise ServicesUnavailable(
            f"{variable} is not set and no Docker engine answers for testcontainers: "
            f"{ENVIRONMENT_HELP}"
        )
