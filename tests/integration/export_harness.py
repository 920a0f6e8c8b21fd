"""What the end-to-end export tests share.

* :class:`ExportProcess` runs ``python -m dicom_gateway export --config ...`` and returns once
  its log says it is consuming (export accepts no associations, so there is nothing to C-ECHO);
  :func:`run_cli` runs the one-shot commands (``echo``, ``send``) with the same configuration.
* :class:`Export` is one test's export set-up on top of the ingest harness: its own exchange
  (``ingest.exchange``) and bucket, its own request queue and dead-letter queue (deleted at the
  end), a configuration with short retry delays, and helpers to put objects into the bucket,
  publish requests (structured or binary mode, or any bytes at all), collect completions and
  read the dead-letter queue. Test modules get it from :func:`export_harness`.
* :func:`with_file_meta` copies a Part 10 file with a hand-written (possibly invalid) file meta;
  :func:`read_received` splits what a destination wrote into its UIDs and data set bytes.
* :class:`ScriptedScp` is a pynetdicom Storage SCP in the test process, for what dcmtk's
  storescp cannot do: answer slowly, count C-STOREs and associations, and report how many
  associations were open at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

import aio_pika
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.formats.json import JSONFormat
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import ThreadedAssociationServer

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
from gateway_client.testing import to_toml
from tests.integration.conftest import Ingest
from tests.support.amqp import EventCollector, ReceivedMessage, current_test_name
from tests.support.factories import Instance, file_meta_length
from tests.support.gateway import GatewayProcess, gateway_environment
from tests.support.local_bus import LocalEventCollector, received
from tests.support.net import free_port, wait_until

#: The log line that says the consumer is attached to its queue (export/consumer.py).
CONSUMING = "export consuming"
VERIFICATION = "1.2.840.10008.1.1"
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


# --- the export service as a process ----------------------------------------------------


class ExportProcess(GatewayProcess):
    """One ``dicom-gateway export`` process: ready once its log says it consumes its queue
    (export accepts no associations, so there is nothing to C-ECHO)."""

    service = "export"

    def start(self) -> Self:
        self._attached_before = self.log_text().count(CONSUMING)
        return super().start()

    def _answers(self) -> bool:
        process = self._require_process()
        if process.poll() is not None:
            raise AssertionError(
                f"export exited with {process.returncode} while starting\n{self.log_tail()}"
            )
        return self.log_text().count(CONSUMING) > self._attached_before


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
        self._processes: list[ExportProcess] = []
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

    def start(self, config: Mapping[str, Any]) -> ExportProcess:
        process = ExportProcess(config, self.directory / f"export-{next(self._numbers)}")
        self._processes.append(process)
        return process.start()

    def write_config(self, config: Mapping[str, Any]) -> Path:
        """Write ``config`` for a one-shot command (``echo``, ``send``); returns its path."""
        directory = self.directory / f"cli-{next(self._numbers)}"
        directory.mkdir(parents=True)
        path = directory / "gateway.toml"
        path.write_text(to_toml(config))
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


# --- received files ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedFile:
    """A Part 10 file a destination wrote, split into what identifies it and its data set."""

    sop_instance_uid: str
    transfer_syntax_uid: str
    data_set: bytes


def read_received(path: Path) -> ReceivedFile:
    meta = read_file_meta_info(path)
    raw = path.read_bytes()
    return ReceivedFile(
        sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
        data_set=raw[file_meta_length(raw) :],
    )


def with_file_meta(
    source: Path,
    target: Path,
    *,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
    transfer_syntax_uid: str | None = None,
) -> Path:
    """Copy a Part 10 file with its file meta rewritten by hand (so that it may be invalid).

    The data set bytes are kept; the meta is encoded here, not by pydicom, which would refuse
    or warn about the values a test wants to see an object carry.
    """
    meta = read_file_meta_info(source)
    raw = source.read_bytes()
    values = {
        0x0002: str(sop_class_uid or meta.MediaStorageSOPClassUID),
        0x0003: str(sop_instance_uid or meta.MediaStorageSOPInstanceUID),
        0x0010: str(transfer_syntax_uid or meta.TransferSyntaxUID),
        0x0012: str(meta.ImplementationClassUID),
    }
    group = b"\x02\x00\x01\x00OB\x00\x00" + (2).to_bytes(4, "little") + b"\x00\x01"
    for element, uid in values.items():
        value = uid.encode("ascii")
        value += b"\x00" * (len(value) % 2)
        group += b"\x02\x00" + element.to_bytes(2, "little") + b"UI"
        group += len(value).to_bytes(2, "little") + value
    group_length = b"\x02\x00\x00\x00UL" + (4).to_bytes(2, "little")
    group_length += len(group).to_bytes(4, "little")
    target.write_bytes(raw[:132] + group_length + group + raw[file_meta_length(raw) :])
    return target


# --- a scripted destination ----------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedStore:
    """One C-STORE the scripted SCP answered."""

    association: int
    calling_ae_title: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    #: The data set bytes as they arrived (pynetdicom keeps them when it does not decode).
    data_set: bytes


class ScriptedScp:
    """A pynetdicom Storage SCP on ``127.0.0.1:port`` that records what happens to it.

    It accepts the given (SOP class, transfer syntaxes) contexts and Verification, waits
    ``store_delay`` seconds in every C-STORE before answering ``status`` (or the status
    ``statuses`` gives for the SOP Instance UID), records what arrived, and keeps count of
    TCP connections, established associations, the peak of associations open at once
    (from EVT_ESTABLISHED to EVT_RELEASED / EVT_ABORTED) and the peak of associations inside a
    C-STORE at once. ``require_calling_aet`` makes it reject other callers (permanent, 1/1/3).
    """

    def __init__(
        self,
        contexts: Sequence[tuple[str, Sequence[str]]],
        *,
        ae_title: str = "SCRIPTED",
        port: int | None = None,
        store_delay: float = 0.0,
        status: int = 0x0000,
        statuses: Mapping[str, int] | None = None,
        require_calling_aet: Sequence[str] = (),
    ) -> None:
        self.port = port if port is not None else free_port()
        self.ae_title = ae_title
        self.store_delay = store_delay
        self.status = status
        self.statuses = dict(statuses or {})
        self._ae = AE(ae_title=ae_title)
        self._ae.maximum_associations = 20
        self._ae.network_timeout = 10
        self._ae.require_calling_aet = list(require_calling_aet)
        for sop_class, transfer_syntaxes in contexts:
            self._ae.add_supported_context(sop_class, list(transfer_syntaxes))
        self._ae.add_supported_context(VERIFICATION)
        self._lock = threading.Lock()
        # Association objects are kept so that their ids are never reused by a later one.
        self._associations: list[object] = []
        self._open: set[int] = set()
        self._storing: set[int] = set()
        self._stores: list[ReceivedStore] = []
        self._established = 0
        self._released = 0
        self._aborted = 0
        self._connections = 0
        self.peak_open = 0
        self.peak_storing = 0
        self._server: ThreadedAssociationServer | None = None

    def __enter__(self) -> ScriptedScp:
        handlers: list[evt.EventHandlerType] = [
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_STORE, self._on_store),
        ]
        # The socket listens when start_server returns: nothing to wait for.
        self._server = self._ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=handlers
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()

    @property
    def stores(self) -> list[ReceivedStore]:
        with self._lock:
            return list(self._stores)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    @property
    def associations(self) -> int:
        """Associations that were established (rejected ones are not)."""
        with self._lock:
            return self._established

    @property
    def endings(self) -> tuple[int, int]:
        """How many established associations ended (released, aborted)."""
        with self._lock:
            return self._released, self._aborted

    def wait_for_stores(self, count: int, timeout: float = 30.0) -> list[ReceivedStore]:
        wait_until(lambda: len(self.stores) >= count, timeout, f"{count} C-STORE(s) received")
        return self.stores

    def _on_connection(self, event: evt.Event) -> None:
        with self._lock:
            self._connections += 1

    def _on_established(self, event: evt.Event) -> None:
        with self._lock:
            self._established += 1
            self._associations.append(event.assoc)
            self._open.add(id(event.assoc))
            self.peak_open = max(self.peak_open, len(self._open))

    def _on_released(self, event: evt.Event) -> None:
        with self._lock:
            self._open.discard(id(event.assoc))
            self._released += 1

    def _on_aborted(self, event: evt.Event) -> None:
        with self._lock:
            self._open.discard(id(event.assoc))
            self._aborted += 1

    def _on_store(self, event: evt.Event) -> int:
        key = id(event.assoc)
        request = cast(C_STORE, event.request)
        sop_instance_uid = str(request.AffectedSOPInstanceUID)
        data_set = request.DataSet
        with self._lock:
            self._storing.add(key)
            self.peak_storing = max(self.peak_storing, len(self._storing))
        try:
            time.sleep(self.store_delay)  # the slow destination under test, not a readiness wait
        finally:
            with self._lock:
                self._storing.discard(key)
                self._stores.append(
                    ReceivedStore(
                        association=key,
                        calling_ae_title=str(event.assoc.requestor.ae_title),
                        sop_instance_uid=sop_instance_uid,
                        transfer_syntax_uid=str(event.context.transfer_syntax),
                        data_set=data_set.getvalue() if isinstance(data_set, BytesIO) else b"",
                    )
                )
        return self.statuses.get(sop_instance_uid, self.status)
