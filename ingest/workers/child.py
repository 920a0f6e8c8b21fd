"""One ingest worker process: the DICOM listener's work for the connections its parent hands it.

Started by :mod:`ingest.workers.pool` as ``python -m ingest.workers.child``, with its end of a
socket pair as an inherited descriptor and a start-up document on stdin
(:class:`~ingest.workers.messages.WorkerStart`): the settings (the parent's, built once), the
log level and the descriptor's number. It admits, receives and spools associations exactly as a
single-process ingest does, in the shared journal; what the parent does for all workers
(uploads, events, ``/metrics``, spool maintenance) it is told over the socket pair
(:mod:`ingest.workers.channel`).

It stops on SIGTERM or SIGINT like the single-process service (the grace period, then
aborting what is still open), and on its own when the parent is gone.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from contextlib import ExitStack

from gateway.errors import GatewayError, JournalError
from gateway.logs import configure_logging
from gateway.netdicom.acceptor import make_acceptor
from gateway.netdicom.handover import HandedConnectionsServer
from gateway.netdicom.modes import configure_pynetdicom
from gateway.stop_signals import block_stop_signals
from ingest.associations import IngestContext, reconcile, settle_ended_threads
from ingest.incoming import IncomingFiles
from ingest.journal import Journal
from ingest.scp import build_ae, listen_address, listener_tls, scp_handlers, stop_scp
from ingest.spool import Spool
from ingest.workers.channel import (
    Channel,
    ForwardedStorage,
    forwarded_counters,
    receive_connections,
)
from ingest.workers.messages import Closed, Ready, WorkerStart

log = logging.getLogger(__name__)

#: How often a worker looks whether its parent is still there while it waits for a signal.
PARENT_CHECK_SECONDS = 1.0
#: How often it settles journal rows whose association ended without being recorded.
RECONCILE_SECONDS = 5.0


def _take_connections(
    channel_socket: socket.socket,
    channel: Channel,
    server: HandedConnectionsServer,
    parent_gone: threading.Event,
) -> None:
    def lost(count: int) -> None:
        for _ in range(count):  # so that the parent's count of our connections stays true
            channel.send(Closed())

    try:
        for connection in receive_connections(channel_socket, lost):
            server.take(connection)
    finally:
        parent_gone.set()


def serve(start: WorkerStart) -> int:
    stop_signals = block_stop_signals()
    settings = start.settings
    configure_logging(start.log_level, settings.log_format)
    channel_socket = socket.socket(fileno=start.channel_fd)
    channel = Channel(channel_socket)
    spool = Spool(settings.ingest.spool_dir)
    incoming = IncomingFiles(spool.incoming)
    configure_pynetdicom(incoming)
    with ExitStack() as stack:
        stack.callback(channel.close)
        journal = Journal.open(spool.journal_path)
        stack.callback(journal.close)
        ctx = IngestContext(
            settings=settings,
            journal=journal,
            spool=spool,
            uploader=ForwardedStorage(channel),
            incoming=incoming,
            metrics=forwarded_counters(channel),
        )
        server = make_acceptor(
            build_ae(ctx),
            listen_address(settings),
            scp_handlers(ctx),
            HandedConnectionsServer,
            ssl_context=listener_tls(settings),
            on_closed=lambda: channel.send(Closed()),
        )
        parent_gone = threading.Event()
        threading.Thread(
            target=_take_connections,
            args=(channel_socket, channel, server, parent_gone),
            name="connections",
            daemon=True,
        ).start()
        grace = settings.ingest.shutdown_grace_seconds
        try:
            channel.send(Ready())
            reconciled = time.monotonic()
            while True:
                received = signal.sigtimedwait(stop_signals, PARENT_CHECK_SECONDS)
                if time.monotonic() - reconciled >= RECONCILE_SECONDS:
                    reconciled = time.monotonic()
                    try:
                        settle_ended_threads(ctx)
                        reconcile(ctx)
                    except (JournalError, OSError) as exc:
                        log.error("ingest worker: journal rows not settled, retrying: %s", exc)
                if received is not None and received.si_signo in stop_signals:
                    name = signal.Signals(received.si_signo).name
                    log.debug("ingest worker: %s, stopping", name)
                    break
                if parent_gone.is_set():
                    # The next start counts whatever is still open as aborted and cleans up
                    # after it: abort open associations now rather than write on meanwhile.
                    # (Those whose release is under way finish it: see stop_scp.)
                    log.error("ingest worker: the parent process is gone, aborting and stopping")
                    grace = 0.0
                    break
        finally:
            stop_scp(server, ctx, grace)
    return 0


def main() -> int:
    try:
        return serve(WorkerStart.decode(sys.stdin.buffer.read()))
    except GatewayError as exc:
        log.error("ingest worker cannot run: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
