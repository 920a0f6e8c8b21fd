"""``dicom-gateway serve``: ingest and export in one process, for trying the gateway out and for
small sites.

The two services run exactly as they do on their own (the same code, the same settings): ingest
on its threads, export on an event loop thread of its own. One HTTP server answers for both.
With no configuration at all, objects go to files under ``./gateway-data`` and events to the
local event log there, so nothing but this process is needed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import ExitStack
from pathlib import Path

from prometheus_client import CollectorRegistry

from export.app import SERVICE as EXPORT
from export.app import log_destinations
from export.app import serve as serve_export
from gateway.errors import GatewayError
from gateway.loop_thread import LoopThread
from gateway.metrics import ExportMetrics, IngestMetrics
from gateway.port_file import listener_ports, write_port_file
from gateway.settings import GatewaySettings
from gateway.status_server import Checks, start_status_server
from gateway.stop_signals import block_stop_signals
from ingest.app import SERVICE as INGEST
from ingest.app import running_ingest

log = logging.getLogger(__name__)

#: How often the main thread looks whether export is still running while it waits for a signal.
_WATCH_SECONDS = 1.0


def startup_lines(settings: GatewaySettings, dicom_port: int, http_port: int | None) -> list[str]:
    """What a newcomer needs to know to use the running gateway, one fact per line.

    The ports are the ones listened on (the system chooses them for 0 and ``"auto"``);
    ``http_port`` is None when the HTTP endpoints are off.
    """
    ingest, http = settings.ingest, settings.http
    lines = [
        f"DICOM: AE title {ae.ae_title} on port {dicom_port} -> pipeline {ae.pipeline}"
        for ae in ingest.ae
    ]
    if settings.storage.backend == "file":
        lines.append(f"objects: files under {settings.storage.path}/{settings.storage.bucket}")
    else:
        lines.append(f"objects: S3 {settings.storage.endpoint}, bucket {settings.storage.bucket}")
    if settings.broker.embedded:
        lines.append(
            f"events: local event log {settings.broker.event_log} "
            "(read it with: dicom-gateway events --follow)"
        )
    else:
        lines.append(f"events: RabbitMQ exchange {settings.broker.exchange}")
    lines += [
        f"export destination {d.name}: {d.ae_title} at {d.host}:{d.port}"
        for d in settings.export.destinations
    ]
    if http_port is not None:
        lines.append(f"health and metrics: http://{http.host}:{http_port}/metrics")
    first = ingest.ae[0].ae_title
    lines.append(f"try it: storescu -aec {first} 127.0.0.1 {dicom_port} FILE.dcm")
    return lines


def run(settings: GatewaySettings, port_file: Path | None = None) -> int:
    """Run both services until SIGTERM or SIGINT; returns the process exit status. Once they
    listen, the ports are written to ``port_file`` if given."""
    stop_signals = block_stop_signals()
    registry = CollectorRegistry()
    checks = Checks(INGEST, EXPORT)
    ingest_metrics = IngestMetrics.register(registry)
    export_metrics = ExportMetrics.register(registry)
    with ExitStack() as stack:
        status = start_status_server(
            settings.http.host, settings.http.ingest_port, registry, checks
        )
        if status is not None:
            stack.callback(status.stop)
        ingest = stack.enter_context(running_ingest(settings, ingest_metrics, checks))
        http_port = None if status is None else status.port
        if port_file is not None:
            write_port_file(port_file, listener_ports(dicom=ingest.port, http=http_port))
        loop = LoopThread("export")
        loop.start()
        stack.callback(loop.stop)
        stop = asyncio.Event()
        log_destinations(settings)
        for line in startup_lines(settings, ingest.port, http_port):
            log.info("%s", line)
        export = loop.submit(serve_export(settings, stop, export_metrics, checks))
        while True:
            received = signal.sigtimedwait(stop_signals, _WATCH_SECONDS)
            # Seen under a sampling profiler (ptrace): a wait that returns without one of
            # our signals, with a meaningless number in it; that is no reason to stop.
            if received is not None and received.si_signo in stop_signals:
                log.info("received %s: shutting down", signal.Signals(received.si_signo).name)
                break
            if export.done():
                export.result()  # raises what stopped it
                raise GatewayError("the export service stopped on its own")
        loop.loop.call_soon_threadsafe(stop.set)
        export.result(settings.export.shutdown_grace_seconds + 30)
    log.info("gateway stopped")
    return 0
