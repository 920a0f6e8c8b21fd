"""Start-up and shutdown of the export service.

Everything runs on one asyncio loop in the main thread; pynetdicom's blocking SCU work runs in
worker threads. SIGTERM/SIGINT stop the consumer, let requests in flight finish within
``export.shutdown_grace_seconds`` and leave the rest unacknowledged, so the broker hands them
out again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from pynetdicom import _config as pynetdicom_config

from export.consumer import ExportConsumer
from export.exporter import Exporter
from export.ledger import Ledger
from export.scu import ScuIdentity
from gateway.broker import AmqpPublisher
from gateway.errors import StorageUnavailable
from gateway.objectstore import open_store
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def configure_pynetdicom() -> None:
    """Send each file's data set bytes as stored: no decoding, no re-encoding, no conversion."""
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True


def scu_identity(settings: GatewaySettings) -> ScuIdentity:
    return ScuIdentity(
        ae_title=settings.export.ae_title,
        implementation_class_uid=settings.ingest.implementation_class_uid,
        implementation_version_name=settings.ingest.implementation_version_name,
    )


async def serve(settings: GatewaySettings, stop: asyncio.Event) -> None:
    configure_pynetdicom()
    export = settings.export
    loop = asyncio.get_running_loop()
    # Blocking work: SCU associations (at most max_associations at once) plus downloads.
    loop.set_default_executor(ThreadPoolExecutor(export.max_associations + export.prefetch + 2))
    store = open_store(settings.storage)
    try:
        await asyncio.to_thread(store.ensure_ready)
    except StorageUnavailable as exc:
        log.warning("object storage not reachable yet (%s); requests will wait", exc)
    ledger = Ledger.open(export.state_dir / "ledger.sqlite3")
    publisher = AmqpPublisher(
        settings.broker.url, settings.broker.exchange, f"{export.queue} completions"
    )
    exporter = Exporter(
        settings=export,
        identity=scu_identity(settings),
        store=store,
        associations=asyncio.Semaphore(export.max_associations),
    )
    consumer = ExportConsumer(settings, exporter, ledger, publisher)
    try:
        await consumer.run(stop)
    finally:
        await publisher.close()
        ledger.close()


def run(settings: GatewaySettings) -> int:
    """Run export until SIGTERM or SIGINT; returns the process exit status."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, stop.set)
        names = ", ".join(
            f"{d.name}={d.ae_title}@{d.host}:{d.port}" for d in settings.export.destinations
        )
        log.info(
            "export starting as %s; destinations: %s", settings.export.ae_title, names or "none"
        )
        await serve(settings, stop)

    asyncio.run(main())
    log.info("export stopped")
    return 0
