"""One ingest row: a data set sent by storescu, in 1 or N associations, into one receiver."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.backends import Backend, new_bucket
from bench.datasets import DataSet
from bench.events import Message
from bench.integrity import compare
from bench.processes import (
    Dcmtk,
    PeakRssSampler,
    SendResult,
    send_with_storescu,
    split,
    tree_cpu_seconds,
    tree_peak_rss,
)
from bench.report import Row
from contracts import AssociationReleased, with_manifest_instances
from gateway_client.testing import GatewayProcess
from tests.support.proc import cpu_seconds
from tests.support.storescp import Storescp

AE_TITLE = "GATEWAY"
PIPELINE = "bench"
#: How long a receiver may take to be ready (the data set cache may be on a busy disk).
STARTUP_SECONDS = 60.0
#: Every association event, whatever the pipeline.
EVENTS_BINDING = "association.released.#"


@dataclass(frozen=True)
class Context:
    """What every run needs: the tools, where to work, how long to wait."""

    dcmtk: Dcmtk
    runs_dir: Path
    progress: Callable[[str], None]
    #: ``ingest.max_event_bytes`` of the gateway rows (None: the gateway's default).
    max_event_bytes: int | None = None

    def storescp(self, directory: Path, *, fork: bool = False, nodelay: bool = True) -> Storescp:
        """dcmtk's storescp (this run's dcmtk) receiving into ``directory``; without
        ``nodelay`` with dcmtk's defaults (Nagle's algorithm on)."""
        return Storescp(
            directory,
            fork=fork,
            nodelay=nodelay,
            bin_dir=self.dcmtk.bin_dir,
            startup_timeout=STARTUP_SECONDS,
        )

    def row_dir(self, *parts: object) -> Path:
        """A new directory for one run of a row (``-2``, ``-3``... for its repeats)."""
        stem = "-".join(str(part) for part in parts)
        directory = self.runs_dir / stem
        repeat = 1
        while directory.exists():
            repeat += 1
            directory = self.runs_dir / f"{stem}-{repeat}"
        directory.mkdir(parents=True)
        return directory

    def send_timeout(self, dataset: DataSet) -> float:
        """Generous: 60 s plus 1 s per 2 MB (about a tenth of the slowest rate seen)."""
        return 60.0 + dataset.total_dataset_bytes / 2e6


def new_row(dataset: DataSet, who: str, label: str, associations: int) -> Row:
    """A row of ``dataset`` without measurements yet."""
    return Row(
        dataset=dataset.spec.name,
        who=who,
        label=label,
        associations=associations,
        instances=len(dataset.instances),
        dataset_bytes=dataset.total_dataset_bytes,
    )


def _tcp(nodelay: bool) -> str:
    return "nodelay" if nodelay else "nagle"


def send_failures(send: SendResult) -> str:
    return "; ".join(f"{title}: {problem}" for title, problem in sorted(send.failures.items()))


def storescp_ingest(
    context: Context, dataset: DataSet, associations: int, *, nodelay: bool = True
) -> Row:
    """storescu → storescp (``--fork`` for several associations), the reference; without
    ``nodelay`` both with dcmtk's defaults (Nagle's algorithm on)."""
    label = "storescp --fork" if associations > 1 else "storescp"
    row = new_row(dataset, "storescp", label, associations)
    directory = context.row_dir(dataset.spec.name, "storescp", associations, _tcp(nodelay))
    groups = split(dataset.paths, associations)
    try:
        with (
            context.storescp(directory, fork=associations > 1, nodelay=nodelay) as scp,
            PeakRssSampler([scp.pid], with_descendants=scp.fork) as receivers,
        ):
            cpu_before = None if scp.fork else cpu_seconds(scp.pid)
            send = send_with_storescu(
                context.dcmtk,
                scp.port,
                scp.ae_title,
                groups,
                log_dir=directory,
                timeout=context.send_timeout(dataset),
                nodelay=nodelay,
            )
            row.receiver_cpu_seconds = _cpu_used(scp.pid, cpu_before)
        row.peak_rss = receivers.peak or None
        row.seconds = send.seconds
        row.machine_busy_seconds = send.machine_busy_seconds
        row.verdict = compare(dataset.expected(), scp.received_digests())
        if send.failures:
            row.note = send_failures(send)
    finally:
        shutil.rmtree(directory / "received", ignore_errors=True)
    return row


def _cpu_used(pid: int, before: float | None) -> float | None:
    after = tree_cpu_seconds(pid)
    return None if before is None or after is None else after - before


@dataclass(frozen=True)
class StoredRun:
    """What a gateway ingest run left in storage, for the export measurement."""

    backend: Backend
    directory: Path
    config: dict[str, Any]
    events: tuple[AssociationReleased, ...]


def ingest_config(
    backend: Backend,
    directory: Path,
    bucket: str,
    associations: int,
    workers: int,
    *,
    max_event_bytes: int | None = None,
) -> dict[str, Any]:
    chosen = {} if max_event_bytes is None else {"max_event_bytes": max_event_bytes}
    return {
        "ingest": {
            "host": "127.0.0.1",
            "max_associations": max(8, associations * 2),
            "workers": workers,
            "spool_dir": str(directory / "spool"),
            # Not the defaults (75 %, 5 GiB): a development machine's disk should not refuse.
            "storage_watermark_percent": 95,
            "reserved_storage_gb": 1,
            "ae": [{"ae_title": AE_TITLE, "pipeline": PIPELINE}],
            **chosen,
        },
        **backend.config(directory, bucket),
        # The ports: chosen by the system and reported by the process (GatewayProcess).
    }


def gateway_label(backend: Backend, workers: int) -> str:
    return backend.label if workers == 1 else f"{backend.label}, {workers} workers"


def gateway_ingest(
    context: Context,
    backend: Backend,
    dataset: DataSet,
    associations: int,
    cleanup: ExitStack,
    *,
    workers: int,
    nodelay: bool = True,
) -> tuple[Row, StoredRun | None]:
    """storescu → ``dicom-gateway ingest``; a fresh process, bucket and spool per row.

    What was stored stays until ``cleanup`` closes (the export measurement reads it). Without
    ``nodelay`` storescu runs with dcmtk's defaults (Nagle's algorithm on).
    """
    row = new_row(dataset, backend.key, gateway_label(backend, workers), associations)
    directory = context.row_dir(
        dataset.spec.name, backend.key, associations, workers, _tcp(nodelay)
    )
    bucket = new_bucket(f"{dataset.spec.name}-{associations}")
    cleanup.callback(backend.delete, directory, bucket)
    backend.prepare(directory, bucket)
    cleanup.callback(shutil.rmtree, directory / "spool", ignore_errors=True)
    config = ingest_config(
        backend, directory, bucket, associations, workers, max_event_bytes=context.max_event_bytes
    )
    groups = split(dataset.paths, associations)
    with (
        backend.bus(directory, EVENTS_BINDING) as bus,
        GatewayProcess(config, directory, startup_timeout=STARTUP_SECONDS) as ingest,
    ):
        assert ingest.pid is not None  # running
        cpu_before = tree_cpu_seconds(ingest.pid)
        send = send_with_storescu(
            context.dcmtk,
            ingest.port,
            AE_TITLE,
            groups,
            log_dir=directory,
            timeout=context.send_timeout(dataset),
            nodelay=nodelay,
        )
        row.receiver_cpu_seconds = _cpu_used(ingest.pid, cpu_before)
        row.seconds = send.seconds
        row.machine_busy_seconds = send.machine_busy_seconds
        if send.failures:
            row.note = send_failures(send)
            return row, None
        try:
            messages = bus.wait_for_count(
                len(groups), context.send_timeout(dataset), "association events"
            )
        except TimeoutError as exc:
            row.note = f"{exc}\n{ingest.log_tail()}"
            return row, None
        row.peak_rss = tree_peak_rss(ingest.pid)
    events = tuple(
        _listed(backend, directory, bucket, message.association_released()) for message in messages
    )
    row.event_seconds = _worst_latency(messages, events, send)
    row.first_event_seconds = max(message.arrived for message in messages) - send.started
    keys = [(i.sop_instance_uid, i.object_key) for e in events for i in e.instances]
    digests = backend.digests(directory, bucket, (key for _, key in keys))
    row.verdict = compare(dataset.expected(), zip((uid for uid, _ in keys), digests, strict=True))
    return row, StoredRun(backend, directory, config, events)


def _listed(
    backend: Backend, directory: Path, bucket: str, event: AssociationReleased
) -> AssociationReleased:
    """The event with its instances, read from its manifest when the list was too long."""
    if event.manifest is None:
        return event
    manifest = backend.read(directory, bucket, event.manifest.object_key)
    return with_manifest_instances(event, manifest.splitlines(keepends=True))


def _worst_latency(
    messages: list[Message], events: tuple[AssociationReleased, ...], send: SendResult
) -> float:
    """The longest time from a storescu's exit to its association's event (by calling AE)."""
    return max(
        message.arrived - send.exits[event.calling_ae_title]
        for message, event in zip(messages, events, strict=True)
    )
