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
import math
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.backends import open_publisher, open_store
from gateway.background import in_background
from gateway.bus import CONFIRM_TIMEOUT_SECONDS, open_event_log
from gateway.errors import BrokerUnavailable, GatewayError, JournalError, StorageUnavailable
from gateway.loop_thread import LoopThread
from gateway.metrics import IngestMetrics
from gateway.netdicom.acceptor import LISTEN_BACKLOG, ThreadedAssociationServer
from gateway.netdicom.modes import check_installed, configure_pynetdicom
from gateway.objectstore import ObjectStore
from gateway.port_file import listener_ports, write_port_file
from gateway.settings import GatewaySettings, IngestSettings
from gateway.status_server import Check, Checks, start_status_server
from gateway.stop_signals import block_stop_signals
from ingest.associations import IngestContext, StorageSink, reconcile, settle_ended_threads
from ingest.incoming import IncomingFiles
from ingest.journal import Journal
from ingest.journal_db import AssociationState
from ingest.listener import open_listener
from ingest.outbox import Outbox
from ingest.policy import SpoolUsage, spool_has_room
from ingest.relay import Relay
from ingest.retention import retaining
from ingest.scp import listener_tls, start_scp, stop_scp
from ingest.spool import Spool
from ingest.study_watch import watching_studies
from ingest.uploader import Uploader
from ingest.workers.pool import WorkerPool

log = logging.getLogger(__name__)

#: The name of this service in readiness reports.
SERVICE = "ingest"

#: How often aborted associations with a delayed cleanup and dead transfers are looked at.
MAINTENANCE_INTERVAL_SECONDS = 5.0
#: How long ``/readyz`` waits for the event bus to answer.
READINESS_TIMEOUT_SECONDS = 5.0


def _remove_due_aborted(journal: Journal, uploader: StorageSink) -> None:
    """Aborted associations whose cleanup delay is over go: objects, files and rows."""
    for association_id in journal.aborted_due(datetime.now(UTC)):
        uploader.aborted(association_id)


def _maintain(ctx: IngestContext, stop: threading.Event) -> None:
    stale_after = ctx.settings.ingest.network_timeout_seconds + 60
    failed: set[str] = set()
    while True:
        try:
            failed = _take_up_retried(ctx, failed)
        except JournalError as exc:
            log.error("spool maintenance failed, retrying later: %s", exc)
        if stop.wait(MAINTENANCE_INTERVAL_SECONDS):
            return
        try:
            _remove_due_aborted(ctx.journal, ctx.uploader)
            ctx.spool.clear_incoming(older_than=stale_after)
            settle_ended_threads(ctx)
            reconcile(ctx)
        except (JournalError, OSError) as exc:
            log.error("spool maintenance failed, retrying later: %s", exc)


def _take_up_retried(ctx: IngestContext, failed_before: set[str]) -> set[str]:
    """Hand the uploader what an operator retried (``dicom-gateway associations retry``):
    failed at the last look, released now. Returns the associations failed now."""
    failed = set(ctx.journal.associations_in_state(AssociationState.FAILED))
    for association_id in failed_before - failed:
        if ctx.journal.state(association_id) is AssociationState.RELEASED:
            log.info("association %s: retried by an operator", association_id)
            ctx.uploader.released(association_id)
    return failed


@dataclass(frozen=True)
class RelayHandle:
    wake: Callable[[], None]
    """Tell the relay that the outbox has something new (from any thread)."""
    check: Check
    """Whether the event bus answers (for ``/readyz``)."""


@contextmanager
def relaying(
    settings: GatewaySettings, outbox: Outbox, metrics: IngestMetrics
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
        relay = Relay(outbox, publisher, metrics)
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


def maintaining(ctx: IngestContext) -> AbstractContextManager[None]:
    return in_background("maintenance", lambda stop: _maintain(ctx, stop))


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


def spool_full_warning(usage: SpoolUsage, spool_dir: Path, settings: IngestSettings) -> str | None:
    """At start-up, when the spool's filesystem has no room by the settings already (so that
    every association would be rejected, on a disk that was full before the gateway wrote
    anything): what to free or change, in one line. None when there is room."""
    watermark, reserve = settings.storage_watermark_percent, settings.reserved_storage_gb
    if spool_has_room(usage, watermark, reserve):
        return None
    crossed, variables = [], []
    if usage.used_percent > watermark:
        crossed.append(f"above ingest.storage_watermark_percent ({watermark:g}%)")
        variables.append("GATEWAY_INGEST__STORAGE_WATERMARK_PERCENT")
    if usage.free_bytes < reserve * 2**30:
        crossed.append(f"below ingest.reserved_storage_gb ({reserve:g} GiB free)")
        variables.append("GATEWAY_INGEST__RESERVED_STORAGE_GB")
    return (
        f"the spool's filesystem ({spool_dir}) is {usage.used_percent:.1f}% used with "
        f"{usage.free_bytes / 2**30:.1f} GiB free, {' and '.join(crossed)}: every association "
        f"is rejected until there is room; free space, or change "
        f"{'that setting' if len(variables) == 1 else 'those settings'} ([ingest] in the "
        f"configuration file, or {' and '.join(variables)})"
    )


@dataclass(frozen=True)
class RunningIngest:
    """What :func:`running_ingest` hands out while ingest runs."""

    context: IngestContext
    port: int
    """The DICOM port it listens on (the one the system chose for ``ingest.port = 0``)."""


@contextmanager
def running_ingest(
    settings: GatewaySettings, metrics: IngestMetrics, checks: Checks
) -> Iterator[RunningIngest]:
    """Everything ingest needs, running; shut down in reverse order on exit."""
    grace = settings.ingest.shutdown_grace_seconds
    check_installed(settings.netdicom)
    spool = Spool(settings.ingest.spool_dir)
    try:
        spool.prepare()
    except OSError as exc:
        raise GatewayError(f"cannot prepare the spool directory {spool.root}: {exc}") from exc
    full = spool_full_warning(spool.usage(), spool.root, settings.ingest)
    if full is not None:
        log.warning("%s", full)
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
            log.warning("object storage not ready (%s); uploads will retry", exc)

        relay = stack.enter_context(relaying(settings, journal.outbox, metrics))
        uploader = Uploader(
            journal, spool, store, settings.ingest, on_announced=relay.wake, metrics=metrics
        )
        uploader.start()
        stack.callback(uploader.stop)
        _remove_due_aborted(journal, uploader)
        stack.callback(uploader.wait_idle, grace)

        ctx = IngestContext(
            settings=settings,
            journal=journal,
            spool=spool,
            uploader=uploader,
            incoming=incoming,
            metrics=metrics.listener_counters(),
        )
        metrics.observe_with(
            open_associations=lambda: _open_associations(journal),
            outbox_depth=journal.outbox.depth,
            set_aside_events=journal.outbox.set_aside_count,
            failed_associations=journal.held.failed_count,
            studies_waiting=journal.studies.pending_count,
            spool_used=lambda: spool.usage().used_percent / 100,
            watermark=settings.ingest.storage_watermark_percent / 100,
        )
        stack.enter_context(maintaining(ctx))
        stack.enter_context(retaining(store, settings.storage.retention_days))
        stack.enter_context(watching_studies(settings, journal, spool, store, relay.wake))
        if settings.ingest.workers == 1:
            port = _listen_here(ctx, stack, checks)
        else:
            port = _listen_in_workers(ctx, stack, checks, metrics)
        checks.add("ingest-event-bus", relay.check)
        checks.add("ingest-storage", lambda: _storage_check(store))
        checks.add("ingest-spool", lambda: _spool_check(spool, settings.ingest))
        checks.note("ingest-set-aside", journal.held.set_aside_note)
        checks.started(SERVICE)
        log.info(
            "ingest listening on %s:%d as %s (max %d associations, %d worker process%s)",
            settings.ingest.host,
            port,
            ", ".join(f"{ae.ae_title}->{ae.pipeline}" for ae in settings.ingest.ae),
            settings.ingest.max_associations,
            settings.ingest.workers,
            "" if settings.ingest.workers == 1 else "es",
        )
        yield RunningIngest(ctx, port)


def _listen_here(ctx: IngestContext, stack: ExitStack, checks: Checks) -> int:
    """Listen in this process; returns the port."""
    settings = ctx.settings.ingest
    try:
        server = start_scp(ctx)
    except OSError as exc:
        raise GatewayError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from exc
    stack.callback(stop_scp, server, ctx, settings.shutdown_grace_seconds)
    checks.add("ingest-listener", lambda: _listener_check(server))
    return int(server.server_address[1])


def _listen_in_workers(
    ctx: IngestContext, stack: ExitStack, checks: Checks, metrics: IngestMetrics
) -> int:
    """Listen here and receive in worker processes; returns the port."""
    settings = ctx.settings.ingest
    listener_tls(ctx.settings)  # a TLS file that cannot be loaded stops the start here
    try:
        listening = open_listener(settings.host, settings.port, LISTEN_BACKLOG)
    except OSError as exc:
        raise GatewayError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from exc
    stack.callback(listening.close)
    pool = WorkerPool(
        ctx.settings, listening, ctx.journal.ownership, ctx.uploader, metrics.listener_counters()
    )
    stack.callback(pool.stop, settings.shutdown_grace_seconds)
    pool.start()
    checks.add("ingest-listener", lambda: _workers_check(pool, settings.workers))
    return int(listening.getsockname()[1])


def _workers_check(pool: WorkerPool, workers: int) -> str | None:
    running = pool.running()
    if running < workers:
        return f"{running} of {workers} ingest worker processes are accepting associations"
    return None


def _open_associations(journal: Journal) -> float:
    # Read at scrape time: a failing journal must not fail the whole scrape.
    try:
        return journal.open_count()
    except JournalError:
        return math.nan


def _recover(journal: Journal, spool: Spool, cleanup_delay: float) -> None:
    """After a crash: unfinished associations count as aborted; partial and orphan files go."""
    abandoned = journal.abort_all_open(datetime.now(UTC) + timedelta(seconds=cleanup_delay))
    for association_id in abandoned:
        log.warning("association %s was open when ingest stopped: discarded", association_id)
    known = set(journal.known_associations())
    for directory in spool.associations.iterdir():
        if directory.name not in known:
            spool.remove_association(directory.name)
    removed = spool.clear_incoming()
    if removed:
        log.info("removed %d partial data sets left from before the restart", removed)


def run(settings: GatewaySettings, port_file: Path | None = None) -> int:
    """Run ingest until SIGTERM or SIGINT (see :mod:`gateway.stop_signals`); returns the
    process exit status. Once it listens, the ports are written to ``port_file`` if given."""
    stop_signals = block_stop_signals()
    registry = CollectorRegistry()
    checks = Checks(SERVICE)
    with ExitStack() as stack:
        status = start_status_server(
            settings.http.host, settings.http.ingest_port, registry, checks
        )
        if status is not None:
            stack.callback(status.stop)
        running = stack.enter_context(
            running_ingest(settings, IngestMetrics.register(registry), checks)
        )
        if port_file is not None:
            http = None if status is None else status.port
            write_port_file(port_file, listener_ports(dicom=running.port, http=http))
        received = signal.sigwait(stop_signals)
        while received not in stop_signals:  # as in dicom_gateway.serve: not one of ours
            received = signal.sigwait(stop_signals)
        log.info("received %s: shutting down", signal.Signals(received).name)
    log.info("ingest stopped")
    return 0
