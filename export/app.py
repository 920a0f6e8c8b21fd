"""Start-up and shutdown of the export service.

Everything runs on one asyncio loop; pynetdicom's blocking SCU work runs in worker threads.
SIGTERM/SIGINT stop the intake, let requests in flight finish within
``export.shutdown_grace_seconds`` and leave the rest unacknowledged, so the bus hands them out
again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path

from prometheus_client import CollectorRegistry

from export.consumer import ExportConsumer
from export.exporter import Exporter
from export.ledger import Ledger
from export.local_intake import consume_local
from export.scu import ScuIdentity
from export.unrouted import offer_unrouted
from gateway.backends import open_publisher, open_store
from gateway.bus import open_event_log
from gateway.errors import StorageUnavailable
from gateway.metrics import ExportMetrics
from gateway.netdicom.modes import check_installed, configure_pynetdicom
from gateway.objectstore import ObjectStore
from gateway.port_file import listener_ports, write_port_file
from gateway.settings import GatewaySettings
from gateway.status_server import Checks, start_status_server

log = logging.getLogger(__name__)

#: The name of this service in readiness reports.
SERVICE = "export"


def scu_identity(settings: GatewaySettings) -> ScuIdentity:
    return ScuIdentity(
        ae_title=settings.export.ae_title,
        implementation_class_uid=settings.ingest.implementation_class_uid,
        implementation_version_name=settings.ingest.implementation_version_name,
        mode=settings.netdicom,
    )


def storage_check(store: ObjectStore) -> str | None:
    try:
        store.ensure_ready()
    except StorageUnavailable as exc:
        return str(exc)
    return None


async def serve(
    settings: GatewaySettings, stop: asyncio.Event, metrics: ExportMetrics, checks: Checks
) -> None:
    """Run export until ``stop`` is set."""
    check_installed(settings.netdicom)
    configure_pynetdicom()
    export = settings.export
    loop = asyncio.get_running_loop()
    # Blocking work: SCU associations (at most max_associations at once) plus downloads.
    loop.set_default_executor(ThreadPoolExecutor(export.max_associations + export.prefetch + 2))
    store = open_store(settings.storage)
    try:
        await asyncio.to_thread(store.ensure_ready)
    except StorageUnavailable as exc:
        log.warning("object storage not ready (%s); requests will wait", exc)
    async with AsyncExitStack() as stack:
        ledger = Ledger.open(export.state_dir / "ledger.sqlite3")
        stack.callback(ledger.close)
        event_log = None
        if settings.broker.embedded:
            event_log = await asyncio.to_thread(open_event_log, settings.broker)
            stack.callback(event_log.close)
        publisher = open_publisher(settings.broker, f"{export.queue} completions", event_log)
        stack.push_async_callback(publisher.close)
        exporter = Exporter.create(export, scu_identity(settings), store, metrics)
        consumer = ExportConsumer(settings, exporter, ledger, publisher, metrics)
        reoffering = asyncio.create_task(offer_unrouted(ledger, publisher, stop))
        stack.push_async_callback(_finish, reoffering)
        checks.add("export-intake", consumer.readiness)
        checks.add("export-storage", lambda: storage_check(store))
        checks.add("export-working-space", exporter.space.problem)
        checks.started(SERVICE)
        if event_log is None:
            # aio-pika only for RabbitMQ: on the local event log export starts without it.
            from export.intake import consume_amqp  # noqa: PLC0415

            await consume_amqp(settings, consumer, stop)
        else:
            await consume_local(settings, event_log, consumer, stop)


async def _finish(task: asyncio.Task[None]) -> None:
    """Wait for ``task``, which ends once the service's stop is set."""
    await task


def log_destinations(settings: GatewaySettings) -> None:
    names = ", ".join(
        f"{d.name}={d.ae_title}@{d.host}:{d.port}" for d in settings.export.destinations
    )
    log.info("export sends as %s; destinations: %s", settings.export.ae_title, names or "none")


def run(settings: GatewaySettings, port_file: Path | None = None) -> int:
    """Run export until SIGTERM or SIGINT; returns the process exit status. Its HTTP port (its
    only listener) is written to ``port_file`` if given."""
    registry = CollectorRegistry()
    metrics = ExportMetrics.register(registry)
    checks = Checks(SERVICE)
    status = start_status_server(settings.http.host, settings.http.export_port, registry, checks)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, stop.set)
        log_destinations(settings)
        await serve(settings, stop, metrics, checks)

    try:
        if port_file is not None:
            write_port_file(port_file, listener_ports(http=None if status is None else status.port))
        asyncio.run(main())
    finally:
        if status is not None:
            status.stop()
    log.info("export stopped")
    return 0
