"""The command line as a newcomer meets it, through ``python -m dicom_gateway``: each failure is
one clear line and an exit status that says what happened, never a traceback or a wait of
minutes. Against the real services where the failure involves them (RabbitMQ, S3, a
destination that is down), and throwaway TCP servers that are not RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aio_pika
import pytest

from gateway_client.testing import GatewayProcess, delete_amqp_topology, gateway_environment
from ingest.policy import SpoolUsage, spool_has_room
from tests.support import dcmtk
from tests.support.factories import ct_series
from tests.support.net import wait_until
from tests.support.services import S3Service

ASSOCIATION = "0b6c1f4e-2f4a-4a8e-9d55-1c2b3a4d5e6f"
SEND = ("send", "--to", "example", "--association", ASSOCIATION)
#: A command that fails on its broker must say so within this long (5 s of connection timeout,
#: and the interpreter's start).
FAILS_WITHIN_SECONDS = 10.0


class Command:
    """One ``python -m dicom_gateway ...`` process; its output goes to files, so that a test can
    wait for a line while it runs."""

    def __init__(
        self, directory: Path, *args: str, env: dict[str, str], cwd: Path | None = None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.stdout_path = directory / "stdout"
        self.stderr_path = directory / "stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dicom_gateway", *args],
                cwd=cwd or directory,
                env={**gateway_environment(), **env},
                stdout=out,
                stderr=err,
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_for(self, text: str, timeout: float) -> None:
        wait_until(lambda: text in self.stderr, timeout, f"{text!r} on stderr")

    def finish(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running after {timeout:g} s:\n{self.stderr}") from None


def run(
    directory: Path, *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> Command:
    """The command run to its end; its output files in ``directory``, run in ``cwd`` (default:
    the same directory)."""
    command = Command(directory, *args, env=env, cwd=cwd)
    command.finish(timeout)
    return command


@contextmanager
def not_rabbitmq(answer: bytes | None) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that is not RabbitMQ: it answers ``answer`` to whatever comes
    and closes (a web server), or, for None, accepts and never says a word. Yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return  # shut down
            if answer is None:
                held.append(connection)
                continue
            with connection:
                connection.recv(64)
                connection.sendall(answer)

    thread = threading.Thread(target=serve, name="not-rabbitmq", daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (Linux)
        server.close()
        thread.join(5)
        for connection in held:
            connection.close()


HTTP_ANSWER = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@pytest.fixture
def export_queue(amqp_url: str) -> Iterator[dict[str, str]]:
    """An exchange of the test's own with an export queue bound to it and nobody consuming (an
    export service that is not running); the variables that point a command at it."""
    exchange, queue = f"test-cli-{uuid.uuid4().hex}", f"test-cli-{uuid.uuid4().hex}"

    async def declare() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_exchange(
                exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            bound = await channel.declare_queue(queue, durable=True)
            await bound.bind(declared, "export.requested")

    asyncio.run(declare())
    yield {
        "GATEWAY_BROKER__URL": amqp_url,
        "GATEWAY_BROKER__EXCHANGE": exchange,
        "GATEWAY_EXPORT__QUEUE": queue,
    }
    asyncio.run(delete_amqp_topology(amqp_url, exchange, [queue]))


@pytest.mark.parametrize("bus", ["local event log", "RabbitMQ"])
def test_send_wait_says_no_export_service_took_it_and_ctrl_c_ends_it_at_once(
    bus: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = {} if bus == "local event log" else request.getfixturevalue("export_queue")
    command = Command(tmp_path / "send", *SEND, "--wait", env=env)
    command.wait_for("no export service has taken the request yet: is `dicom-gateway serve`", 20)
    command.process.send_signal(signal.SIGINT)
    started = time.monotonic()
    assert command.finish(10) == 130
    assert time.monotonic() - started < 3, "Ctrl-C must not wait for the poll to end"
    assert "Traceback" not in command.stderr


def test_send_wait_tells_a_destination_that_is_down_and_prints_each_instance(
    tmp_path: Path, refusing_port: int
) -> None:
    retry_after = 12  # longer than send --wait takes to C-ECHO the destination itself
    env = {
        "GATEWAY_INGEST__PORT": "0",
        "GATEWAY_HTTP__INGEST_PORT": "auto",
        # Not what is tested, and not the machine's to decide (see test_quickstart.py).
        "GATEWAY_INGEST__STORAGE_WATERMARK_PERCENT": "99",
        "GATEWAY_INGEST__RESERVED_STORAGE_GB": "0",
        "GATEWAY_EXPORT__RETRIES": "1",
        "GATEWAY_EXPORT__RETRY_BACKOFF_SECONDS": f"[{retry_after}]",
        "GATEWAY_EXPORT__DESTINATIONS": json.dumps(
            [
                {
                    "name": "example",
                    "ae_title": "STORESCP",
                    "host": "127.0.0.1",
                    "port": refusing_port,
                }
            ]
        ),
    }
    with GatewayProcess(None, tmp_path / "serve", service="serve", env=env) as gateway:
        series = ct_series(tmp_path / "in", 2)
        dcmtk.storescu("127.0.0.1", gateway.port, [s.path for s in series], "GATEWAY").check()

        def released() -> list[str]:
            listed = run(tmp_path / "events", "events", env=env, cwd=gateway.directory)
            return [json.loads(line)["id"] for line in listed.stdout.splitlines()]

        wait_until(lambda: len(released()) == 1, 20, "the association's event")
        (association,) = released()
        sent = run(
            tmp_path / "send",
            *("send", "--to", "example", "--association", association, "--wait"),
            env=env,
            cwd=gateway.directory,
        )
        log = gateway.log_text()

    reason = "destination not reachable ([Errno 111] Connection refused)"
    assert sent.process.returncode == 1, sent.stderr
    out = sent.stdout.splitlines()
    assert out[0].endswith(": failed")
    assert out[1] == "  example: failed, sent 0, failed 2"
    assert len(out) == 4
    assert all(line.endswith(f".dcm: failed ({reason})") for line in out[2:])
    notes = [
        line.split(": ", 1)[1] for line in sent.stderr.splitlines() if "waiting for" not in line
    ]
    assert notes == [
        "an export service is working on the request",
        f"C-ECHO to example from here failed ({reason}); export retries it 1 time, after "
        f"{retry_after} s, before it reports the failure",
    ]
    # The server's log says it once per attempt, in export's own line, without pynetdicom's.
    assert f"destination example: {reason}; 2 instance(s) retried in 12.0 s (retry 1 of 1)" in log
    assert "TCP Initialisation Error" not in log
    assert "unable to connect to remote" not in log


@pytest.mark.parametrize(
    ("server", "said"),
    [
        (None, "no AMQP answer from 127.0.0.1:{port} within 5 s: is that a RabbitMQ port"),
        (HTTP_ANSWER, "127.0.0.1:{port} broke off the AMQP handshake ("),
    ],
    ids=["silent", "web server"],
)
@pytest.mark.parametrize(
    "args", [SEND, (*SEND, "--wait"), ("events", "--follow")], ids=["send", "send --wait", "events"]
)
def test_a_broker_url_that_is_not_rabbitmq_fails_within_seconds_in_one_line(
    server: bytes | None, said: str, args: tuple[str, ...], tmp_path: Path
) -> None:
    with not_rabbitmq(server) as port:
        env = {"GATEWAY_BROKER__URL": f"amqp://gw:s3cr3t@127.0.0.1:{port}/"}
        started = time.monotonic()
        command = run(tmp_path, *args, env=env, timeout=30)
        took = time.monotonic() - started
    assert command.process.returncode == 1
    (line,) = command.stderr.splitlines()
    assert said.format(port=port) in line
    assert "s3cr3t" not in line
    assert took < FAILS_WITHIN_SECONDS


def test_a_broker_that_refuses_the_connection_is_one_line_without_aiormqs(
    tmp_path: Path, refusing_port: int
) -> None:
    env = {"GATEWAY_BROKER__URL": f"amqp://127.0.0.1:{refusing_port}/"}
    command = run(tmp_path, *SEND, env=env)
    assert command.process.returncode == 1
    (line,) = command.stderr.splitlines()  # aiormq's ERROR for the attempt is not there
    assert line.endswith(
        f"cannot connect to RabbitMQ at 127.0.0.1:{refusing_port}: Connection refused"
    )


def test_the_export_service_on_a_port_that_is_not_rabbitmq_retries_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    with not_rabbitmq(None) as port:
        env = {
            "GATEWAY_BROKER__URL": f"amqp://127.0.0.1:{port}/",
            "GATEWAY_HTTP__EXPORT_PORT": "auto",
        }
        export = GatewayProcess(None, tmp_path / "export", service="export", env=env)
        export.start(until="listening")
        try:
            wait_until(
                lambda: f"no AMQP answer from 127.0.0.1:{port} within 5 s" in export.log_text(),
                FAILS_WITHIN_SECONDS,
                "export's warning",
            )
            assert export.terminate(15) == 0
        finally:
            export.stop()
    assert "retrying in 1 s" in export.log_text()


def test_send_on_rabbitmq_prints_only_its_result(
    tmp_path: Path, export_queue: dict[str, str]
) -> None:
    command = run(tmp_path, *SEND, env=export_queue)
    assert command.process.returncode == 0, command.stderr
    assert command.stderr == ""
    (line,) = command.stdout.splitlines()
    assert re.fullmatch(r"export cli-[0-9a-f-]+ requested", line)


def test_send_on_rabbitmq_without_an_export_queue_says_no_export_service_started(
    tmp_path: Path, amqp_url: str
) -> None:
    exchange = f"test-cli-{uuid.uuid4().hex}"
    env = {"GATEWAY_BROKER__URL": amqp_url, "GATEWAY_BROKER__EXCHANGE": exchange}
    try:
        command = run(tmp_path, *SEND, env=env)
    finally:
        asyncio.run(delete_amqp_topology(amqp_url, exchange, []))
    assert command.process.returncode == 1
    (line,) = command.stderr.splitlines()
    assert line.endswith(
        f"RabbitMQ has no queue for export requests on exchange {exchange}: no export service "
        "has started against it yet (export and serve declare theirs)"
    )


def test_echo_to_a_destination_that_is_down_says_why_in_its_own_line(
    tmp_path: Path, refusing_port: int
) -> None:
    env = {
        "GATEWAY_EXPORT__DESTINATIONS": json.dumps(
            [{"name": "down", "ae_title": "STORESCP", "host": "127.0.0.1", "port": refusing_port}]
        )
    }
    command = run(tmp_path, "echo", "down", env=env)
    assert command.process.returncode == 1
    assert (
        command.stdout
        == "C-ECHO down: destination not reachable ([Errno 111] Connection refused)\n"
    )
    assert command.stderr == ""


@pytest.mark.parametrize(
    ("wrong", "code"),
    [("secret_key", "SignatureDoesNotMatch"), ("access_key", "InvalidAccessKeyId")],
)
def test_wrong_s3_credentials_are_reported_as_such(
    wrong: str, code: str, tmp_path: Path, s3_service: S3Service, bucket_name: str
) -> None:
    access_key = "no-such-key" if wrong == "access_key" else s3_service.access_key
    env = {
        "GATEWAY_INGEST__PORT": "0",
        "GATEWAY_HTTP__INGEST_PORT": "auto",
        "GATEWAY_STORAGE__BACKEND": "s3",
        "GATEWAY_STORAGE__ENDPOINT": s3_service.endpoint,
        "GATEWAY_STORAGE__BUCKET": bucket_name,
        "GATEWAY_STORAGE__ACCESS_KEY": access_key,
        "GATEWAY_STORAGE__SECRET_KEY": f"{s3_service.secret_key}-wrong",
    }
    ingest = GatewayProcess(None, tmp_path / "ingest", service="ingest", env=env)
    try:
        ingest.start(until="listening")  # not ready: its storage check fails
    finally:
        ingest.stop()
    log = ingest.log_text()
    assert (
        f"object storage not ready (bucket {bucket_name}: S3 at {s3_service.endpoint} refused "
        f"the credentials of access key {access_key!r} ({code}): check storage.access_key and "
        "storage.secret_key); uploads will retry"
    ) in log, ingest.log_tail()
    assert "not reachable" not in log


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        (
            "GATEWAY_INGEST__RESERVED_STORAGE_GB",
            "100000",
            "below ingest.reserved_storage_gb (100000 GiB free)",
        ),
        (
            "GATEWAY_INGEST__STORAGE_WATERMARK_PERCENT",
            "0.001",
            "above ingest.storage_watermark_percent (0.001%)",
        ),
    ],
)
def test_a_spool_without_room_is_one_warning_at_start_up_and_nothing_else_changes(
    setting: str, value: str, said: str, tmp_path: Path
) -> None:
    env = {"GATEWAY_INGEST__PORT": "0", "GATEWAY_HTTP__INGEST_PORT": "auto", setting: value}
    ingest = GatewayProcess(None, tmp_path / "full", service="ingest", env=env)
    try:
        ingest.start(until="listening")  # not ready: its spool check fails, as it should
        rejected = dcmtk.echoscu("127.0.0.1", ingest.port, called_ae="GATEWAY")
    finally:
        ingest.stop()
    log = ingest.log_text()
    warnings = [line for line in log.splitlines() if "spool's filesystem" in line]
    assert len(warnings) == 1
    assert " WARNING ingest.app " in warnings[0]
    assert said in warnings[0]
    assert setting in warnings[0]
    # As before: the disk guard rejects the association (transient, temporary congestion).
    assert rejected.rejection is not None


def test_a_spool_with_room_starts_without_the_warning(tmp_path: Path) -> None:
    env = {"GATEWAY_INGEST__PORT": "0", "GATEWAY_HTTP__INGEST_PORT": "auto"}
    with GatewayProcess(None, tmp_path / "room", service="ingest", env=env) as ingest:
        log = ingest.log_text()
    total, used, free = shutil.disk_usage(tmp_path)
    has_room = spool_has_room(SpoolUsage(used_bytes=used, free_bytes=free), 75, 5)
    assert ("spool's filesystem" in log) == (not has_room), f"{total=} {used=} {free=}"
