"""A real gateway and its services, for integration tests of pipelines (and of the gateway).

The fixtures of :mod:`gateway_client.pytest_plugin` are thin wrappers around this module, which
does not import pytest, so the same helpers work from any test runner or script.

**Services.** :func:`gateway_services` finds RabbitMQ and S3, in this order: the
``GATEWAY_TEST_*`` environment variables (:class:`TestServices`); otherwise containers started
with testcontainers (RabbitMQ and MinIO, pinned images) when a Docker engine answers; otherwise
:class:`ServicesUnavailable` says which variables to set. Either way a service must answer its
own protocol (an AMQP handshake, a signed S3 ``ListBuckets``) before it is handed out.

**The gateway.** :func:`running_gateway` starts ``dicom-gateway serve`` as a subprocess with a
configuration of its own: free ports, its own bucket, exchange and export queue (so tests can
run side by side on shared services), or, without services, the embedded defaults (local event
log and file storage) in its directory. It is ready when ``/readyz`` answers 200. At the end the
process is stopped and what it created on the services is deleted (bucket, exchange, queues).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

import aio_pika
import urllib3
from aio_pika.exceptions import AMQPError
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from yarl import URL

from contracts.events import AssociationReleased
from gateway.bus import dead_letter_queue
from gateway.dicom_status import STORED_WITH_WARNING, Status
from gateway.netdicom.dicom_socket import handle_conn_open
from gateway.settings import GatewaySettings
from gateway_client.client import PipelineClient
from gateway_client.settings import ClientSettings

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

RABBITMQ_IMAGE: Final = "rabbitmq:3.13.7-alpine"
MINIO_IMAGE: Final = "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
ENVIRONMENT_HELP: Final = (
    "set GATEWAY_TEST_AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/) and "
    "GATEWAY_TEST_S3_ENDPOINT (host:port), GATEWAY_TEST_S3_ACCESS_KEY, "
    "GATEWAY_TEST_S3_SECRET_KEY, or make a Docker engine available for testcontainers"
)
#: How long a service or the gateway may take to answer before the test environment is broken.
SERVICE_TIMEOUT_SECONDS: Final = 60.0
GATEWAY_STARTUP_SECONDS: Final = 30.0
#: The AE title and pipeline of the gateway under test.
AE_TITLE: Final = "GATEWAY"
PIPELINE: Final = "default"


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


def wait_until(
    condition: Callable[[], bool], timeout: float, description: str, interval: float = 0.05
) -> None:
    """Call ``condition`` until it returns true; :class:`TimeoutError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{description}: not reached within {timeout:g} s")
        time.sleep(interval)


def http_get(host: str, port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET ``http://host:port/path``: its status and body, error statuses (503 from
    ``/readyz``) included. Raises :class:`OSError` when nothing answers.
    """
    try:
        url = f"http://{host}:{port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (a server started on it soon will get it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


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


# --- names and clean-up ---------------------------------------------------------------------

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


# --- the gateway under test -----------------------------------------------------------------


def gateway_config(
    directory: Path,
    services: GatewayServices | None,
    *,
    bucket: str,
    dicom_port: int,
    http_port: int,
) -> dict[str, Any]:
    """The configuration of a gateway under test, before the test's own overrides.

    One AE title (:data:`AE_TITLE` for pipeline :data:`PIPELINE`, any caller), no export
    destinations, exports not retried (a test wants the verdict, not a back-off), everything
    on disk under ``directory``.
    """
    exchange = f"dicom-gateway.{bucket}"
    config: dict[str, Any] = {
        "ingest": {
            "host": "127.0.0.1",
            "port": dicom_port,
            "spool_dir": str(directory / "spool"),
            "ae": [{"ae_title": AE_TITLE, "pipeline": PIPELINE}],
            # A test must not fail because the test machine's disk is more than 75% full
            # (the production watermark); the spool of a test holds little.
            "storage_watermark_percent": 99,
            "reserved_storage_gb": 1,
        },
        "export": {
            "state_dir": str(directory / "export"),
            "queue": f"{exchange}.export",
            "retries": 0,
            "destinations": [],
        },
        "http": {"host": "127.0.0.1", "ingest_port": http_port, "export_port": 0},
    }
    if services is None:
        config["storage"] = {
            "backend": "file",
            "path": str(directory / "objects"),
            "bucket": bucket,
        }
        config["broker"] = {"url": "", "event_log": str(directory / "events.sqlite3")}
    else:
        config["storage"] = {
            "backend": "s3",
            "endpoint": services.s3.endpoint,
            "bucket": bucket,
            "access_key": services.s3.access_key,
            "secret_key": services.s3.secret_key,
            "secure": services.s3.secure,
        }
        config["broker"] = {"url": services.amqp_url, "exchange": exchange}
    return config


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: tables are merged key by key, anything else
    (values, lists) replaced."""
    result = dict(base)
    for key, value in overrides.items():
        current = result.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            result[key] = merged(current, value)
        else:
            result[key] = value
    return result


@dataclass
class RunningGateway:
    """A ``dicom-gateway serve`` process under test, and helpers to talk to it."""

    directory: Path
    config_path: Path
    settings: GatewaySettings
    process: subprocess.Popen[bytes]
    #: The names of this gateway's own bucket and consumer queues are derived from it.
    bucket: str
    host: str = "127.0.0.1"
    _consumers: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        """The DICOM port."""
        return self.settings.ingest.port

    @property
    def ae_title(self) -> str:
        """The called AE title :meth:`send` uses: the first configured one."""
        return self.settings.ingest.ae[0].ae_title

    @property
    def pipeline(self) -> str:
        """The pipeline of :attr:`ae_title`'s associations."""
        return self.settings.ingest.ae[0].pipeline

    @property
    def http_port(self) -> int:
        port = self.settings.http.ingest_port
        assert isinstance(port, int), "running_gateway configures a port number"
        return port

    @property
    def log_path(self) -> Path:
        return self.directory / "gateway.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def http_get(self, path: str) -> tuple[int, str]:
        """GET ``path`` (``/readyz``, ``/metrics``...): status and body."""
        return http_get(self.host, self.http_port, path)

    def consumer_name(self, stem: str) -> str:
        """A consumer name for this test only, whose queues are deleted at the end.

        Queue names are global on a RabbitMQ, so two tests that used the same consumer name
        would share one queue bound to both tests' exchanges.
        """
        name = f"{stem}.{self.bucket}"
        self._consumers.append(name)
        return name

    def send(
        self,
        items: Iterable[Path | str | Dataset],
        *,
        calling_ae: str = "GWTEST-SCU",
        timeout: float = 60.0,
    ) -> None:
        """C-STORE Part 10 files or data sets in one association, then release it.

        Each is proposed in its own transfer syntax (at most 128 different SOP class and
        transfer syntax pairs per call); a data set without file meta is sent as explicit VR
        little endian. Raises :class:`AssertionError` when the association fails or an
        instance is not stored.
        """
        datasets = [_sendable(item) for item in items]
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        for context in dict.fromkeys(
            (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets
        ):
            ae.add_requested_context(context[0], [context[1]])
        assoc = ae.associate(
            self.host,
            self.port,
            ae_title=self.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, handle_conn_open)],
        )
        if not assoc.is_established:
            raise AssertionError(f"no association with the gateway\n{self.log_tail()}")
        failed: list[str] = []
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds).get("Status")
                if status is None:
                    failed.append(f"{ds.SOPInstanceUID}: no response")
                elif int(status) != Status.SUCCESS and int(status) not in STORED_WITH_WARNING:
                    failed.append(f"{ds.SOPInstanceUID}: status 0x{int(status):04X}")
        finally:
            if assoc.is_established:
                assoc.release()
        if failed:
            raise AssertionError("not stored: " + "; ".join(failed))

    def wait_for_association(self, timeout: float = 30.0) -> AssociationReleased:
        """The next association-released event (of any pipeline) not returned before."""
        (released,) = self.wait_for_associations(1, timeout)
        return released

    def wait_for_associations(self, count: int, timeout: float = 30.0) -> list[AssociationReleased]:
        """The next ``count`` association-released events, in the order they were published."""
        return asyncio.run(self.wait_for_associations_async(count, timeout))

    async def wait_for_associations_async(
        self, count: int, timeout: float = 30.0
    ) -> list[AssociationReleased]:
        """:meth:`wait_for_associations` for async code."""
        try:
            return await self._observe(count, timeout)
        except TimeoutError:
            raise AssertionError(
                f"fewer than {count} association event(s) within {timeout:g} s\n{self.log_tail()}"
            ) from None

    @property
    def _observer(self) -> str:
        return f"observer.{self.bucket}"

    async def _observe(self, count: int, timeout: float) -> list[AssociationReleased]:
        # The observer's queue exists from start-up on (running_gateway subscribes it with
        # count 0), so nothing published since then is missed.
        found: list[AssociationReleased] = []
        settings = ClientSettings.from_gateway(self.settings)
        async with PipelineClient(settings, name="gateway-tests") as client:
            subscription = await client.subscribe(consumer=self._observer, pipeline=None)
            async with asyncio.timeout(timeout):
                while len(found) < count:
                    received = await subscription.next()
                    await received.ack()
                    found.append(received.event)
        return found

    def queues(self) -> list[str]:
        """Every queue this gateway and its tests declared (RabbitMQ)."""
        consumers = [self._observer, *self._consumers]
        return [
            self.settings.export.queue,
            dead_letter_queue(self.settings.export.queue),
            *consumers,
            *map(dead_letter_queue, consumers),
        ]

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; SIGKILL after ``timeout``. Returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def _sendable(item: Path | str | Dataset) -> Dataset:
    if not isinstance(item, Dataset):
        return dcmread(item)
    if "TransferSyntaxUID" in getattr(item, "file_meta", ()):
        return item
    ds = Dataset(item)  # a new data set sharing the elements: the caller's stays as it was
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def gateway_environment() -> dict[str, str]:
    """The environment of the gateway process: only its TOML file configures it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environment["PYTHONUNBUFFERED"] = "1"  # log lines reach the file as they happen
    return environment


@contextmanager
def running_gateway(
    directory: Path,
    services: GatewayServices | None,
    *,
    name: str,
    overrides: Mapping[str, Any] | None = None,
    startup_timeout: float = GATEWAY_STARTUP_SECONDS,
) -> Iterator[RunningGateway]:
    """Run ``dicom-gateway serve`` for the block (see the module docstring).

    ``name`` (the test's) goes into the bucket name; ``overrides`` is merged into the
    configuration (:func:`merged`), e.g. ``{"export": {"destinations": [...]}}``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    bucket = bucket_name_for(name)
    config = merged(
        gateway_config(
            directory, services, bucket=bucket, dicom_port=free_port(), http_port=free_port()
        ),
        overrides or {},
    )
    config_path = directory / "gateway.toml"
    config_path.write_text(to_toml(config))
    # What the gateway process reads: only its file (its environment has no GATEWAY_*), so the
    # file is validated without the settings sources that would read this process's variables.
    settings = GatewaySettings.model_validate(tomllib.loads(config_path.read_text()))
    with ExitStack() as cleanup:
        if services is not None:
            cleanup.callback(delete_bucket, services.s3, settings.storage.bucket)
        with (directory / "gateway.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "dicom_gateway", "serve", "--config", str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
                env=gateway_environment(),
            )
        gateway = RunningGateway(directory, config_path, settings, process, bucket)
        if services is not None:
            cleanup.callback(
                lambda: asyncio.run(
                    delete_amqp_topology(
                        services.amqp_url, settings.broker.exchange, gateway.queues()
                    )
                )
            )
        cleanup.callback(gateway.stop)
        try:
            wait_until(lambda: _ready(gateway), startup_timeout, "gateway ready", interval=0.1)
        except TimeoutError:
            raise RuntimeError(
                f"the gateway was not ready within {startup_timeout:g} s\n{gateway.log_tail()}"
            ) from None
        # Bound now, so that wait_for_association sees every association from here on.
        asyncio.run(gateway.wait_for_associations_async(0, startup_timeout))
        yield gateway


def _ready(gateway: RunningGateway) -> bool:
    if gateway.process.poll() is not None:
        raise RuntimeError(
            f"the gateway exited with {gateway.process.returncode} while starting\n"
            f"{gateway.log_tail()}"
        )
    try:
        return gateway.http_get("/readyz")[0] == 200
    except OSError:  # not listening yet
        return False


# --- TOML -----------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def to_toml(document: Mapping[str, Any]) -> str:
    """Write ``document`` as TOML: scalars, arrays of scalars, tables and arrays of tables.

    Enough for the gateway's configuration; ``None`` values are left out (TOML has no null).
    """
    lines: list[str] = []
    _write_table(lines, (), document)
    return "\n".join(lines).lstrip("\n") + "\n"


def _write_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    tables: list[tuple[str, Mapping[str, Any]]] = []
    arrays_of_tables: list[tuple[str, Sequence[Mapping[str, Any]]]] = []
    for key, value in table.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif _is_array_of_tables(value):
            arrays_of_tables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, sub_table in tables:
        sub_path = (*path, key)
        lines.extend(["", f"[{'.'.join(_key(k) for k in sub_path)}]"])
        _write_table(lines, sub_path, sub_table)
    for key, items in arrays_of_tables:
        sub_path = (*path, key)
        for item in items:
            lines.extend(["", f"[[{'.'.join(_key(k) for k in sub_path)}]]"])
            _write_table(lines, sub_path, item)


def _is_array_of_tables(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(isinstance(item, Mapping) for item in value)
    )


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str | Path):
        return _string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def _string(text: str) -> str:
    # JSON's string escapes are all valid in TOML basic strings; ensure_ascii=False keeps
    # characters outside the BMP literal, where JSON would write surrogate pairs TOML rejects.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
