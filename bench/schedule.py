"""The order of the runs: data set by data set, every row once per pass, ``repeat`` passes.

Within a pass the reference and the gateway rows alternate (storescp, the ceiling, the
gateway, for each number of associations), so that a noisy neighbour slows all of them
rather than one; the report shows the median of each row's passes (:mod:`bench.stats`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial

from bench.backends import Backend, Embedded, RabbitMqS3
from bench.ceilings import DOWNLOAD, ingest_ceiling, s3_download
from bench.datasets import DataSet
from bench.export_runs import export_label, gateway_export, storescu_export
from bench.ingest_runs import (
    Context,
    StoredRun,
    gateway_ingest,
    gateway_label,
    new_row,
    storescp_ingest,
)
from bench.report import EXPORT_REFERENCE, INGEST_CEILING, Row
from bench.stats import export_ceiling, merge_runs

LABELS = {"storescp": "storescp", "rabbitmq-s3": RabbitMqS3.label, "embedded": Embedded.label}


@dataclass(frozen=True)
class Plan:
    receivers: tuple[str, ...]
    associations: tuple[int, ...]
    workers: tuple[int, ...]
    export: bool
    repeat: int
    #: the small instances sent with Nagle's algorithm on (None: no Nagle rows)
    nagle: DataSet | None = None


@dataclass
class Results:
    """The merged rows of each table."""

    ingest: list[Row] = field(default_factory=list)
    export: list[Row] = field(default_factory=list)
    nagle: list[Row] = field(default_factory=list)

    def all(self) -> list[Row]:
        return [*self.ingest, *self.export, *self.nagle]


def run_all(
    plan: Plan,
    context: Context,
    datasets: Sequence[DataSet],
    backends: dict[str, Backend],
    skipped: dict[str, str],
) -> Results:
    """Every row, data set by data set, ``plan.repeat`` times each."""
    results = Results()
    queues: list[str] = []
    try:
        for dataset in datasets:
            ingest: list[Row] = []
            export: list[Row] = []
            for run in range(plan.repeat):
                context.progress(f"{dataset.spec.name}: pass {run + 1} of {plan.repeat}")
                _one_pass(
                    plan,
                    context,
                    dataset,
                    backends=backends,
                    skipped=skipped,
                    queues=queues,
                    ingest=ingest,
                    export=export,
                )
            results.ingest += merge_runs(ingest)
            results.export += _with_ceiling(merge_runs(export))
        if plan.nagle is not None:
            nagle: list[Row] = []
            for run in range(plan.repeat):
                context.progress(f"Nagle on: pass {run + 1} of {plan.repeat}")
                nagle += _nagle_pass(plan, context, plan.nagle, backends, skipped)
            results.nagle = merge_runs(nagle)
    finally:
        for backend in backends.values():
            backend.close(queues)
    return results


def _with_ceiling(rows: list[Row]) -> list[Row]:
    """``rows`` and, when storescu's row and the download's are there, the export ceiling
    made of them, after them."""
    sender = next((row for row in rows if row.who == EXPORT_REFERENCE), None)
    download = next((row for row in rows if row.who == DOWNLOAD), None)
    if sender is None or download is None:
        return rows
    return [*rows, export_ceiling(sender, download)]


def _one_pass(
    plan: Plan,
    context: Context,
    dataset: DataSet,
    *,
    backends: dict[str, Backend],
    skipped: dict[str, str],
    queues: list[str],
    ingest: list[Row],
    export: list[Row],
) -> None:
    name = dataset.spec.name
    exporting = name == "ct" and plan.export
    if exporting:
        context.progress(f"{name}: export by storescu")
        blank = new_row(dataset, EXPORT_REFERENCE, "storescu", 1)
        export.append(attempt(context, blank, partial(storescu_export, context, dataset)))
    # Not more associations than instances: 2 large instances make 2 associations.
    counts = dict.fromkeys(min(n, len(dataset.instances)) for n in plan.associations)
    for associations in counts:
        for receiver in plan.receivers:
            if receiver == "storescp":
                context.progress(f"{name}: storescp, {associations} association(s)")
                blank = new_row(dataset, receiver, LABELS[receiver], associations)
                run = partial(storescp_ingest, context, dataset, associations)
                ingest.append(attempt(context, blank, run))
                continue
            backend = backends.get(receiver)
            if isinstance(backend, RabbitMqS3):
                context.progress(f"{name}: ceiling, {associations} association(s)")
                blank = new_row(dataset, INGEST_CEILING, "ceiling", associations)
                run = partial(ingest_ceiling, context, backend, dataset, associations)
                ingest.append(attempt(context, blank, run))
            for workers in plan.workers if associations > 1 else (1,):
                context.progress(
                    f"{name}: {receiver}, {associations} association(s), {workers} worker(s)"
                )
                blank = new_row(dataset, receiver, LABELS[receiver], associations)
                if backend is None:
                    blank.note = skipped.get(receiver, "skipped")
                    ingest.append(blank)
                    continue
                blank.label = gateway_label(backend, workers)
                row, exported = _gateway_rows(
                    context,
                    backend,
                    dataset,
                    (associations, workers),
                    blank,
                    export_to=queues if exporting and associations == 1 else None,
                )
                ingest.append(row)
                export += exported


def _nagle_pass(
    plan: Plan,
    context: Context,
    dataset: DataSet,
    backends: dict[str, Backend],
    skipped: dict[str, str],
) -> list[Row]:
    """storescu with dcmtk's defaults into storescp with its defaults, then into each gateway
    backend; one association."""
    rows = []
    for receiver in plan.receivers:
        context.progress(f"{dataset.spec.name}, Nagle on: {receiver}")
        blank = new_row(dataset, receiver, LABELS[receiver], 1)
        backend = backends.get(receiver)
        if receiver == "storescp":
            run = partial(storescp_ingest, context, dataset, 1, nodelay=False)
            row = attempt(context, blank, run)
        elif backend is None:
            blank.note = skipped.get(receiver, "skipped")
            row = blank
        else:
            with ExitStack() as cleanup:
                ingest = partial(
                    gateway_ingest, context, backend, dataset, 1, cleanup, workers=1, nodelay=False
                )
                row, _ = attempt_ingest(context, blank, ingest)
        rows.append(replace(row, dataset=f"{row.dataset}, Nagle on"))
    return rows


def _gateway_rows(
    context: Context,
    backend: Backend,
    dataset: DataSet,
    concurrency: tuple[int, int],
    blank: Row,
    *,
    export_to: list[str] | None,
) -> tuple[Row, list[Row]]:
    """The gateway's ingest row, and with ``export_to`` (the queues to delete at the end) the
    export of what it stored and, on S3, the download of the same objects, before they are
    deleted."""
    with ExitStack() as stored_cleanup:
        associations, workers = concurrency
        run = partial(
            gateway_ingest, context, backend, dataset, associations, stored_cleanup, workers=workers
        )
        row, stored = attempt_ingest(context, blank, run)
        if export_to is None or stored is None or row.failed:
            return row, []
        context.progress(f"{dataset.spec.name}: export by {backend.key}")
        blank = new_row(dataset, f"export-{backend.key}", export_label(backend), 1)
        exported = [
            attempt(context, blank, partial(gateway_export, context, stored, dataset, export_to))
        ]
        if isinstance(backend, RabbitMqS3):
            exported.append(_download(context, stored, dataset))
        return row, exported


def _download(context: Context, stored: StoredRun, dataset: DataSet) -> Row:
    context.progress(f"{dataset.spec.name}: download from S3")
    blank = new_row(dataset, DOWNLOAD, "S3 download", 1)
    return attempt(context, blank, partial(s3_download, context, stored, dataset))


def attempt(context: Context, blank: Row, run: Callable[[], Row]) -> Row:
    """The row ``run`` measures, or ``blank`` with the error that stopped it."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 (the one boundary: reported, and fails the run)
        blank.note = f"error: {exc}"
        context.progress(f"{blank.dataset}/{blank.label}: {exc}")
        return blank


def attempt_ingest(
    context: Context, blank: Row, run: Callable[[], tuple[Row, StoredRun | None]]
) -> tuple[Row, StoredRun | None]:
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 (as in attempt)
        blank.note = f"error: {exc}"
        context.progress(f"{blank.dataset}/{blank.label}: {exc}")
        return blank, None
