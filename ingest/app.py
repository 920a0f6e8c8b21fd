"""Start-up and shutdown of the ingest service.

Resources are opened in one place, in dependency order, and closed in reverse:
journal → object store → broker relay → uploader → SCP. On SIGTERM/SIGINT the SCP stops
accepting, open associations get ``shutdown_grace_seconds`` to finish, then what is pending is
flushed if the services are reachable. Anything not flushed stays in the journal and the spool
and is resumed by the next start.
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from pynetdicom import _config as pynetdicom_config
from pynetdicom import dimse_messages as pynetdicom_dimse_messages
from pynetdicom.transport import ThreadedAssociationServer

from gateway.broker import CONFIRM_TIMEOUT_SECONDS
from gateway.bus import open_event_log, open_publisher
from gateway.errors import BrokerUnavailable, GatewayError, JournalError, StorageUnavailable
from gateway.loop_thread import LoopThread
from gateway.metrics import IngestMetrics
from gateway.objectstore import ObjectStore, open_store
from gateway.settings import GatewaySettings, IngestSettings
from gateway.status_server import Check, Checks, start_status_server
from ingest.incoming import IncomingFiles
from ingest.journal import Journal
from ingest.policy import spool_has_room
from ingest.relay import Relay
from ingest.scp import IngestContext, start_scp
from ingest.spool import Spool
from ingest.uploader import Uploader

log = logging.getLogger(__name__)

#: The name of this service in readiness reports.
SERVICE = "ingest"

#: How often aborted associations with a delayed cleanup and dead transfers are looked at.
MAINTENANCE_INTERVAL_SECONDS = 5.0
#: How long ``/readyz`` waits for the event bus to answer.
READINESS_TIMEOUT_SECONDS = 5.0


def configure_pynetdicom(incoming: IncomingFiles) -> None:
    """Process-wide pynetdicom switches the SCP depends on.

    - Stream each data set to a file instead of memory, keeping the bytes as received.
    - Accept every storage SOP class, private and unknown ones too, in the sender's first
      proposed transfer syntax, so nothing is ever converted.
    - Create those files with :class:`IncomingFiles` (pynetdicom offers no hook for this, so
      its module-level factory is replaced): on the spool's filesystem, and a full disk fails
      one C-STORE instead of killing the association.
    """
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    pynetdicom_config.UNRESTRICTED_STORAGE_SERVICE = True
    pynetdicom_dimse_messages.NamedTemporaryFile = incoming  # type: ignore[attr-defined, assignment]


def _remove_due_aborted(journal: Journal, spool: Spool) -> None:
    for association_id in journal.aborted_due(datetime.now(UTC)):
        spool.remove_association(association_id)
        journal.forget(association_id)
        log.info("association %s: files of the aborted association removed", association_id)


def _maintain(ctx: IngestContext, stop: threading.Event) -> None:
    stale_after = ctx.settings.ingest.network_timeout_seconds + 60
    while not stop.wait(MAINTENANCE_INTERVAL_SECONDS):
        try:
            _remove_due_aborted(ctx.journal, ctx.spool)
            ctx.spool.clear_incoming(older_than=stale_after)
        except (JournalError, OSError) as exc:
            log.error("spool maintenance failed, retrying later: %s", exc)


@dataclass(frozen=True)
class RelayHandle:
    wake: Callable[[], None]
    """Tell the relay that the outbox has something new (from any thread)."""
    check: Check
    """Whether the event bus answers (for ``/readyz``)."""


@contextmanager
def relaying(
    settings: GatewaySettings, journal: Journal, metrics: IngestMetrics
) -> Iterator[RelayHandle]:
    """The outbox relay on its own event loop thread.

    On exit the relay stops, then whatever is pending is flushed within the grace period.
    """
    grace = settings.ingest.shutdown_grace_seconds
    with ExitStack() as stack:
        event_log = None
        if settings.broker.embedded:
            event_log = open_event_log(settings.broker)
            stack.callback(event_log.close)
        loop = LoopThread("broker")
        loop.start()
        publisher = open_publisher(
            settings.broker, f"{settings.ingest.instance_name} ingest", event_log
        )
        try:
            loop.submit(publisher.ensure_ready()).result(15)
        except BrokerUnavailable as exc:
            log.warning("event bus not reachable yet (%s); events will wait in the outbox", exc)
        relay = Relay(journal, publisher, metrics)
        relay_task = loop.submit(relay.run())

        def wake() -> None:
            loop.loop.call_soon_threadsafe(relay.wake)

        def check() -> str | None:
            try:
                loop.submit(publisher.ensure_ready()).result(READINESS_TIMEOUT_SECONDS)
            except BrokerUnavailable as exc:
                return str(exc)
            except TimeoutError:
                return f"event bus did not answer within {READINESS_TIMEOUT_SECONDS:g} s"
            return None

        try:
            yield RelayHandle(wake, check)
        finally:
            # Let a publish in progress finish (cancelling it after the broker took the event
            # would publish it twice), but not wait on a broker that stopped confirming.
            loop.loop.call_soon_threadsafe(relay.stop)
            try:
                relay_task.result(min(grace, CONFIRM_TIMEOUT_SECONDS))
            except TimeoutError:
                relay_task.cancel()
                try:
                    relay_task.result(5)
                except (concurrent.futures.CancelledError, TimeoutError):
                    log.warning("event relay did not stop in time; it was cancelled")
            try:
                loop.submit(relay.drain(timeout=grace)).result(grace + 5)
                loop.submit(publisher.close()).result(5)
            except TimeoutError:
                log.warning(
                    "event bus did not answer at shutdown; pending events stay in the outbox"
                )
            loop.stop()


@contextmanager
def maintaining(ctx: IngestContext) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=_maintain, args=(ctx, stop), name="maintenance", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _storage_check(store: ObjectStore) -> str | None:
    try:
        store.ensure_ready()
    except StorageUnavailable as exc:
        return str(exc)
    return None


def _listener_check(server: ThreadedAssociationServer) -> str | None:
    if server.socket is None or server.socket.fileno() < 0:
        return "the DICOM listener is closed"
    return None


def _spool_check(spool: Spool, settings: IngestSettings) -> str | None:
    usage = spool.usage()
    if spool_has_room(usage, settings.storage_watermark_percent, settings.reserved_storage_gb):
        return None
    return (
        f"spool {usage.used_percent:.1f}% used, {usage.free_bytes / 2**30:.1f} GiB free "
        f"(watermark {settings.storage_watermark_percent:g}%, reserve "
        f"{settings.reserved_storage_gb:g} GiB): new associations are rejected"
    )


@contextmanager
def running_ingest(
    settings: GatewaySettings, metrics: IngestMetrics, checks: Checks
) -> Iterator[IngestContext]:
    """Everything ingest needs, running; shut down in reverse order on exit."""
    grace = settings.ingest.shutdown_grace_seconds
    spool = Spool(settings.ingest.spool_dir)
    try:
        spool.prepare()
    except OSError as exc:
        raise GatewayError(f"cannot prepare the spool directory {spool.root}: {exc}") from exc
    incoming = IncomingFiles(spool.incoming)
    configure_pynetdicom(incoming)
    with ExitStack() as stack:
        journal = Journal.open(spool.journal_path)
        stack.callback(journal.close)
        _recover(journal, spool, settings.ingest.aborted_cleanup_seconds)

        store = open_store(settings.storage)
        try:
            store.ensure_ready()
        except StorageUnavailable as exc:
            log.warning("object storage not reachable yet (%s); uploads will retry", exc)

        relay = stack.enter_context(relaying(settings, journal, metrics))
        uploader = Uploader(
            journal, spool, store, settings.ingest, on_announced=relay.wake, metrics=metrics
        )
        uploader.start()
        stack.callback(uploader.stop)
        stack.callback(uploader.wait_idle, grace)

        ctx = IngestContext(
            settings=settings,
            journal=journal,
            spool=spool,
            uploader=uploader,
            incoming=incoming,
            metrics=metrics,
        )
        metrics.observe_with(
            open_associations=ctx.table.alive,
            outbox_depth=journal.outbox_depth,
            spool_used=lambda: spool.usage().used_percent / 100,
            watermark=settings.ingest.storage_watermark_percent / 100,
        )
        stack.enter_context(maintaining(ctx))
        try:
            server = start_scp(ctx)
        except OSError as exc:
            raise GatewayError(
                f"cannot listen on {settings.ingest.host}:{settings.ingest.port}: {exc}"
            ) from exc
        stack.callback(_stop_scp, server, ctx, grace)
        checks.add(
            "ingest-listener",
            lambda: _listener_check(server),
        )
        checks.add("ingest-event-bus", relay.check)
        checks.add("ingest-storage", lambda: _storage_check(store))
        checks.add("ingest-spool", lambda: _spool_check(spool, settings.ingest))
        checks.started(SERVICE)
        log.info(
            "ingest listening on %s:%d as %s (max %d associations)",
            settings.ingest.host,
            settings.ingest.port,
            ", ".join(f"{ae.ae_title}->{ae.pipeline}" for ae in settings.ingest.ae),
            settings.ingest.max_associations,
        )
        yield ctx


def _stop_scp(server: ThreadedAssociationServer, ctx: IngestContext, grace_seconds: float) -> None:
    """Stop accepting, give admitted associations the grace period, then abort what is left.

    Connections that never became an association (port probes, garbage) are not waited for:
    pynetdicom keeps their threads until its ACSE timeout although nothing can come of them.
    """
    server.shutdown()
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and ctx.table.alive() > 0:
        time.sleep(0.05)
    for assoc in server.active_associations:
        if ctx.table.get(assoc) is not None:
            log.warning("association still open at the end of the grace period: aborting it")
        assoc.abort()
    for stale in ctx.table.reap():
        log.warning("association %s ended without a release", stale.association_id)


def _recover(journal: Journal, spool: Spool, cleanup_delay: float) -> None:
    """After a crash: unfinished associations count as aborted; partial and orphan files go."""
    abandoned = journal.abort_all_open(datetime.now(UTC) + timedelta(seconds=cleanup_delay))
    for association_id in abandoned:
        log.warning("association %s was open when ingest stopped: discarded", association_id)
    _remove_due_aborted(journal, spool)
    known = set(journal.known_associations())
    for directory in spool.associations.iterdir():
        if directory.name not in known:
            spool.remove_association(directory.name)
    removed = spool.clear_incoming()
    if removed:
        log.info("removed %d partial data sets left from before the restart", removed)


def run(settings: GatewaySettings) -> int:
    """Run ingest until SIGTERM or SIGINT; returns the process exit status.

    The two signals are blocked before any thread starts (threads inherit the mask) and the
    main thread collects them with ``sigwait``: a signal handler would only run when the
    kernel happens to deliver the signal to the main thread, which a blocked wait does not
    guarantee with this many threads.
    """
    stop_signals = block_stop_signals()
    registry = CollectorRegistry()
    checks = Checks(SERVICE)
    with ExitStack() as stack:
        status = start_status_server(
            settings.http.host, settings.http.ingest_port, registry, checks
        )
        if status is not None:
            stack.callback(status.stop)
        stack.enter_context(running_ingest(settings, IngestMetrics.register(registry), checks))
        received = signal.sigwait(stop_signals)
        while received not in stop_signals:  # as in gateway.serve: not one of ours
            received = signal.sigwait(stop_signals)
        log.info("received %s: shutting down", signal.Signals(received).name)
    log.info("ingest stopped")
    return 0


def block_stop_signals() -> set[signal.Signals]:
    """Block SIGTERM and SIGINT in this thread and every thread started after; see :func:`run`."""
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    return stop_signals
