"""One end-to-end export test's set-up, on top of the ingest harness.

* :class:`Export`: the test's own exchange (``ingest.exchange``) and bucket, its own request
  queue and dead-letter queue (deleted at the end), a configuration with short retry delays,
  export processes (:class:`~gateway_client.testing.GatewayProcess`, ready when ``/readyz``
  answers 200, i.e. attached to its queue), and helpers to put objects into the bucket, publish
  requests (structured or binary mode, or any bytes at all), collect completions and read the
  dead-letter queue. Test modules get it from :func:`export_harness`.
* :func:`run_cli` runs the one-shot commands (``echo``, ``send``) with a configuration.

What a destination received is read with :mod:`tests.support.received`; a destination that
misbehaves on purpose is :class:`tests.support.scripted_scp.ScriptedScp`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aio_pika
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.formats.json import JSONFormat

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    export_completed_from_event,
    export_requested_event,
    parse_event,
    to_structured,
)
from contracts.export import ExportCompleted, ExportRequested
from contracts.keys import new_association_id, object_key
from contracts.routing import EXPORT_COMPLETED_ROUTING_KEY, EXPORT_REQUESTED_ROUTING_KEY
from gateway.eventlog import EventLog
from gateway_client.testing import (
    GatewayProcess,
    TestServices,
    gateway_environment,
    to_toml,
    with_netdicom,
)
from tests.support.amqp import EventCollector, ReceivedMessage, current_test_name
from tests.support.factories import Instance
from tests.support.ingest import Ingest
from tests.support.local_bus import LocalEventCollector, received

#: The export settings every test starts from: short delays, never the production defaults.
EXPORT_DEFAULTS: Mapping[str, Any] = {
    "ae_title": "GWTEST-SCU",
    "max_associations": 2,
    "prefetch": 4,
    "retries": 2,
    "retry_backoff_seconds": [0.3, 0.5],
    "network_timeout_seconds": 5,
    "dimse_timeout_seconds": 10,
    "shutdown_grace_seconds": 5,
}


def destination(name: str, port: int, ae_title: str = "STORESCP") -> dict[str, Any]:
    """One ``[[export.destinations]]`` entry on this machine."""
    return {"name": name, "ae_title": ae_title, "host": "127.0.0.1", "port": port}


def completed(message: ReceivedMessage) -> ExportCompleted:
    """A completion's data, read through the contract a pipeline would use."""
    event = parse_event(message.body, content_type=message.content_type, headers=message.headers)
    return export_completed_from_event(event)


def new_export_id() -> str:
    return f"test-{uuid.uuid4()}"


def run_cli(
    config_path: Path, *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``python -m dicom_gateway <args> --config <config_path>``, run to its end."""
    command = [sys.executable, "-m", "dicom_gateway", *args, "--config", str(config_path)]
    try:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=config_path.parent,
            env=gateway_environment(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(command)} did not finish within {timeout:g} s") from exc


# --- one test's export set-up ----------------------------------------------------------


class Export:
    """Configuration, queues, objects and messages of one export test."""

    def __init__(self, ingest: Ingest, directory: Path) -> None:
        self.ingest = ingest
        self.directory = directory
        self._services = TestServices()
        self._processes: list[GatewayProcess] = []
        self._numbers = itertools.count(1)

    @property
    def queue(self) -> str:
        """A request queue of this test's own."""
        return f"export.{self.ingest.bucket}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead-letter"

    @property
    def bucket(self) -> str:
        return self.ingest.bucket

    def config(self, destinations: Sequence[Mapping[str, Any]], **export: Any) -> dict[str, Any]:
        config = self.ingest.config()
        config["export"] = {
            **EXPORT_DEFAULTS,
            "queue": self.queue,
            "state_dir": str(self.directory / "export-state"),
            "destinations": [dict(d) for d in destinations],
            **export,
        }
        return config

    def start(self, config: Mapping[str, Any]) -> GatewayProcess:
        """An export process on ``config``, once it is ready (attached to its queue)."""
        directory = self.directory / f"export-{next(self._numbers)}"
        process = GatewayProcess(config, directory, service="export", services=self._services)
        self._processes.append(process)
        return process.start()

    def write_config(self, config: Mapping[str, Any]) -> Path:
        """Write ``config`` for a one-shot command (``echo``, ``send``); returns its path."""
        directory = self.directory / f"cli-{next(self._numbers)}"
        directory.mkdir(parents=True)
        path = directory / "gateway.toml"
        path.write_text(to_toml(with_netdicom(config, self._services.netdicom)))
        return path

    # --- objects

    def put_instances(
        self, instances: Sequence[Instance], association_id: str | None = None
    ) -> list[str]:
        """Store ``instances`` as ingest would, under one association; returns their keys."""
        association = association_id or new_association_id()
        keys = [
            object_key(association, i.uids.study, i.uids.series, i.uids.sop_instance)
            for i in instances
        ]
        if self.ingest.embedded:
            for key, instance in zip(keys, instances, strict=True):
                target = self.ingest.object_root / key
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(instance.path, target)
            return keys
        client = self.ingest.s3.client()
        if not client.bucket_exists(self.bucket):
            client.make_bucket(self.bucket)
        for key, instance in zip(keys, instances, strict=True):
            client.fput_object(self.bucket, key, str(instance.path))
        return keys

    # --- messages

    def completions(
        self, binding_keys: Sequence[str] = (EXPORT_COMPLETED_ROUTING_KEY,)
    ) -> EventCollector | LocalEventCollector:
        """A collector of what is published on ``binding_keys``; open it before publishing."""
        return self.ingest.events(binding_keys)

    def publish(
        self,
        *requests: ExportRequested,
        mode: Literal["structured", "binary"] = "structured",
        event_id: str | None = None,
    ) -> None:
        """Publish each request as a CloudEvent (structured or RabbitMQ binary mode)."""
        messages = []
        for request in requests:
            event = export_requested_event(
                request, source="dicom-gateway://tests/export", event_id=event_id, time=now()
            )
            if mode == "structured":
                messages.append(
                    aio_pika.Message(
                        to_structured(event),
                        content_type=CONTENT_TYPE_STRUCTURED,
                        message_id=str(event.get_id()),
                    )
                )
            else:
                binary = rabbitmq.to_binary(event, JSONFormat())
                messages.append(
                    aio_pika.Message(
                        binary.body,
                        content_type=binary.content_type,
                        headers=dict(binary.headers),
                        message_id=str(event.get_id()),
                    )
                )
        self._send(messages)

    def publish_raw(
        self, body: bytes, *, content_type: str | None, headers: Mapping[str, Any] | None = None
    ) -> None:
        """Publish any bytes at all with routing key ``export.requested``."""
        message = aio_pika.Message(body, content_type=content_type, headers=dict(headers or {}))
        self._send([message])

    def _send(self, messages: Sequence[aio_pika.Message]) -> None:
        if not self.ingest.embedded:
            asyncio.run(self._publish(messages))
            return
        event_log = EventLog.open(self.ingest.event_log)
        try:
            for message in messages:
                event_log.append(
                    EXPORT_REQUESTED_ROUTING_KEY,
                    message.body,
                    message_id=message.message_id or str(uuid.uuid4()),
                    content_type=message.content_type,
                    headers=dict(message.headers or {}),
                )
        finally:
            event_log.close()

    def dead_letters(self, count: int, timeout: float = 20.0) -> list[ReceivedMessage]:
        """Take ``count`` messages from the dead-letter queue, failing after ``timeout``."""
        if not self.ingest.embedded:
            return asyncio.run(self._get(self.dead_letter_queue, count, timeout))
        event_log = EventLog.open(self.ingest.event_log)
        try:
            found: list[ReceivedMessage] = []
            deadline = time.monotonic() + timeout
            while len(found) < count and time.monotonic() < deadline:
                found = [received(event) for event, _ in event_log.dead_letters(self.queue)]
                time.sleep(0.05)
        finally:
            event_log.close()
        if len(found) < count:
            raise AssertionError(
                f"expected {count} dead letter(s) in the event log within {timeout:g} s, "
                f"got {len(found)}"
            )
        return found

    def close(self) -> None:
        """Stop every process this harness started, then delete the test's queues.

        (The ``ingest`` fixture deletes the test's exchange and bucket after this.)
        """
        try:
            for process in self._processes:
                if process.is_running():
                    process.terminate()
        finally:
            if not self.ingest.embedded:
                asyncio.run(self._delete_queues())

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        return await aio_pika.connect(
            self.ingest.amqp_url, client_properties={"connection_name": current_test_name()}
        )

    async def _publish(self, messages: Sequence[aio_pika.Message]) -> None:
        connection = await self._connect()
        async with connection:
            # Confirms, and a message no queue takes raises: a test never publishes into a void.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.declare_exchange(
                self.ingest.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            for message in messages:
                await exchange.publish(message, EXPORT_REQUESTED_ROUTING_KEY, mandatory=True)

    def recreate_exchange(self, kind: aio_pika.ExchangeType = aio_pika.ExchangeType.TOPIC) -> None:
        """Delete the exchange and declare it again (RabbitMQ only), as an operator or another
        service's start-up might: every binding to it is gone. ``kind``: a type other than
        topic is a misconfiguration that the services' own declarations are refused for."""
        asyncio.run(self._recreate_exchange(kind))

    async def _recreate_exchange(self, kind: aio_pika.ExchangeType) -> None:
        connection = await self._connect()
        async with connection:
            channel = await connection.channel()
            await channel.exchange_delete(self.ingest.exchange)
            await channel.declare_exchange(self.ingest.exchange, kind, durable=True)

    async def _get(self, queue_name: str, count: int, timeout: float) -> list[ReceivedMessage]:
        connection = await self._connect()
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(queue_name, ensure=True)
            taken: list[ReceivedMessage] = []
            deadline = time.monotonic() + timeout
            while len(taken) < count:
                message = await queue.get(no_ack=True, fail=False)
                if message is not None:
                    taken.append(
                        ReceivedMessage(
                            body=message.body,
                            routing_key=message.routing_key,
                            headers=dict(message.headers),
                            content_type=message.content_type,
                            message_id=message.message_id,
                        )
                    )
                    continue
                if time.monotonic() >= deadline:
                    raise AssertionError(
                        f"expected {count} message(s) in {queue_name} within {timeout:g} s, "
                        f"got {len(taken)}: {[m.body[:100] for m in taken]}"
                    )
                await asyncio.sleep(0.05)
            return taken

    async def _delete_queues(self) -> None:
        connection = await self._connect()
        async with connection:
            channel = await connection.channel()
            for name in (self.queue, self.dead_letter_queue):
                await channel.queue_delete(name)


@contextlib.contextmanager
def export_harness(ingest: Ingest, directory: Path) -> Iterator[Export]:
    harness = Export(ingest, directory)
    try:
        yield harness
    finally:
        harness.close()


def now() -> datetime:
    return datetime.now(UTC)
