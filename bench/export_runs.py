"""Export rows: the stored CT series sent on to a storescp, by the gateway and by storescu."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import UTC, datetime

from bench.backends import Backend, export_queues
from bench.datasets import DataSet
from bench.ingest_runs import STARTUP_SECONDS, Context, StoredRun, new_row
from bench.integrity import compare
from bench.processes import busy_between, send_with_storescu, tree_peak_rss
from bench.report import Row
from contracts import (
    ExportRequested,
    ExportStatus,
    export_completed_from_event,
    export_requested_event,
    parse_event,
    to_structured,
)
from contracts.routing import EXPORT_REQUESTED_ROUTING_KEY
from gateway_client.testing import GatewayProcess, merged
from tests.support.proc import machine_busy_seconds

DESTINATION = "bench"


def export_label(backend: Backend) -> str:
    return f"dicom-gateway export, {backend.services}"


def gateway_export(context: Context, stored: StoredRun, dataset: DataSet, queues: list[str]) -> Row:
    """``dicom-gateway export`` of the stored association to a storescp.

    Timed from publishing the request (durable on return) to the arrival of its completion at
    a queue bound to its reply routing key (RabbitMQ) or in the local event log. The export
    queues it declares are added to ``queues`` for the clean-up.
    """
    backend = stored.backend
    row = new_row(dataset, f"export-{backend.key}", export_label(backend), 1)
    (event,) = stored.events
    directory = context.row_dir(dataset.spec.name, "export", backend.key)
    queue = f"dicom-gateway-bench.export.{uuid.uuid4().hex[:8]}"
    queues.extend(export_queues(queue))
    reply_key = f"export.completed.bench.{uuid.uuid4().hex}"
    try:
        with context.storescp(directory / "storescp") as scp:
            config = merged(
                stored.config,
                {
                    "export": {
                        "queue": queue,
                        "state_dir": str(directory / "state"),
                        "retries": 0,
                        "destinations": [
                            {
                                "name": DESTINATION,
                                "ae_title": scp.ae_title,
                                "host": "127.0.0.1",
                                "port": scp.port,
                            }
                        ],
                    },
                },
            )
            with (
                backend.bus(stored.directory, reply_key) as bus,
                GatewayProcess(
                    config, directory, service="export", startup_timeout=STARTUP_SECONDS
                ) as export,
            ):
                request = ExportRequested(
                    export_id=f"bench-{uuid.uuid4()}",
                    destinations=(DESTINATION,),
                    association_id=event.association_id,
                    reply_routing_key=reply_key,
                )
                body = to_structured(
                    export_requested_event(
                        request, source="dicom-gateway://bench", time=datetime.now(UTC)
                    )
                )
                busy_before = machine_busy_seconds()
                started = time.monotonic()
                bus.publish(EXPORT_REQUESTED_ROUTING_KEY, body, request.export_id)
                (message,) = bus.wait_for_count(1, context.send_timeout(dataset), "completion")
                row.machine_busy_seconds = busy_between(busy_before)
                row.seconds = message.arrived - started
                assert export.pid is not None  # running
                row.peak_rss = tree_peak_rss(export.pid)
            completed = export_completed_from_event(
                parse_event(message.body, content_type=message.content_type, headers={})
            )
        row.verdict = compare(dataset.expected(), scp.received_digests())
        if completed.status is not ExportStatus.SUCCEEDED:
            row.note = f"export {completed.status}"
    finally:
        shutil.rmtree(directory / "storescp" / "received", ignore_errors=True)
        shutil.rmtree(directory / "state", ignore_errors=True)
    return row


def storescu_export(context: Context, dataset: DataSet) -> Row:
    """The same files sent by storescu in one association: the reference."""
    row = new_row(dataset, "storescu", "storescu", 1)
    directory = context.row_dir(dataset.spec.name, "export", "storescu")
    try:
        with context.storescp(directory) as scp:
            send = send_with_storescu(
                context.dcmtk,
                scp.port,
                scp.ae_title,
                [dataset.paths],
                log_dir=directory,
                timeout=context.send_timeout(dataset),
            )
        row.seconds = send.seconds
        row.machine_busy_seconds = send.machine_busy_seconds
        row.peak_rss = send.peak_rss or None
        row.verdict = compare(dataset.expected(), scp.received_digests())
        if send.failures:
            row.note = "; ".join(send.failures.values())
    finally:
        shutil.rmtree(directory / "received", ignore_errors=True)
    return row
