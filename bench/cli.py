"""``python -m bench``: options, the order of the runs, the report and the exit status.

Exit status 0 when every row that ran verified, 1 when an instance was lost or altered or a
run failed, 2 for bad options. Rows whose services are not configured are skipped, with a note.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.backends import Backend, Embedded, RabbitMqS3
from bench.datasets import (
    DataSet,
    DataSetSpec,
    ct_series,
    large_instances,
    load_or_generate,
    small_instances,
)
from bench.export_runs import export_label, gateway_export, storescu_export
from bench.ingest_runs import (
    Context,
    StoredRun,
    gateway_ingest,
    gateway_label,
    new_row,
    storescp_ingest,
)
from bench.processes import Dcmtk
from bench.report import (
    EXPORT_REFERENCE,
    NOTES,
    Row,
    command_line,
    export_table,
    ingest_table,
    machine,
)
from gateway_client.testing import ServicesUnavailable

RECEIVERS = ("storescp", "rabbitmq-s3", "embedded")
LABELS = {"storescp": "storescp", "rabbitmq-s3": RabbitMqS3.label, "embedded": Embedded.label}
DATASETS = ("ct", "small", "large")


@dataclass(frozen=True)
class Sizes:
    ct: int
    small: int
    large: int
    large_mb: int


FULL = Sizes(ct=500, small=2000, large=4, large_mb=100)
QUICK = Sizes(ct=100, small=400, large=2, large_mb=50)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Ingest and export throughput of dicom-gateway next to dcmtk, on data "
        "sets made in code, with a byte-for-byte check of everything received.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smaller data sets for a smoke run ({QUICK.ct} CT, {QUICK.small} small, "
        f"{QUICK.large} x {QUICK.large_mb} MB; full: {FULL.ct}, {FULL.small}, "
        f"{FULL.large} x {FULL.large_mb} MB)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dicom-gateway-bench",
        help="cache of the generated data sets and the runs' files (default: %(default)s)",
    )
    parser.add_argument("--ct-count", type=_positive, help="CT slices (512x512, 16-bit)")
    parser.add_argument("--small-count", type=_positive, help="small (~10 KB) instances")
    parser.add_argument("--large-count", type=_positive, help="large multi-frame instances")
    parser.add_argument("--large-mb", type=_positive, help="size of each large instance, MB")
    parser.add_argument(
        "--datasets", type=_choices(DATASETS), default=DATASETS, help="default: ct,small,large"
    )
    parser.add_argument(
        "--receivers",
        type=_choices(RECEIVERS),
        default=RECEIVERS,
        help="default: storescp,rabbitmq-s3,embedded (rabbitmq-s3 reads GATEWAY_TEST_AMQP_URL, "
        "GATEWAY_TEST_S3_ENDPOINT, GATEWAY_TEST_S3_ACCESS_KEY, GATEWAY_TEST_S3_SECRET_KEY)",
    )
    parser.add_argument(
        "--associations",
        type=_counts,
        default=(1, 4),
        help="concurrent associations per row, e.g. 1,4 (the default)",
    )
    parser.add_argument(
        "--workers",
        type=_counts,
        default=(1, 2),
        help="ingest worker processes of the gateway rows with several associations, e.g. "
        "1,2 (the default); rows with one association always use 1",
    )
    parser.add_argument("--no-export", action="store_true", help="skip the export rows")
    parser.add_argument(
        "--keep", action="store_true", help="keep the runs' logs even when everything passed"
    )
    parser.add_argument(
        "--dcmtk-bin",
        type=Path,
        help="directory of dcmtk's tools (default: /usr/bin if dcmtk is there, else the first "
        "directory on PATH with dcmtk's storescu)",
    )
    return parser


def _choices(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [part for part in chosen if part not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return chosen

    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of numbers") from None
    if not counts or any(count < 1 or count > 16 for count in counts):
        raise argparse.ArgumentTypeError("between 1 and 16 associations")
    return counts


def _specs(args: argparse.Namespace) -> list[DataSetSpec]:
    preset = QUICK if args.quick else FULL
    by_name = {
        "ct": ct_series(args.ct_count or preset.ct),
        "small": small_instances(args.small_count or preset.small),
        "large": large_instances(
            args.large_count or preset.large, args.large_mb or preset.large_mb
        ),
    }
    return [by_name[name] for name in DATASETS if name in args.datasets]


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(arguments)
    began = time.monotonic()
    dcmtk = Dcmtk.find(args.dcmtk_bin)
    workdir: Path = args.workdir.resolve()

    datasets: list[DataSet] = []
    data_lines = []
    for spec in _specs(args):
        _progress(f"data set {spec.name}: {spec.description}")
        started = time.monotonic()
        dataset, generated = load_or_generate(spec, workdir / "data")
        how = f"generated in {time.monotonic() - started:.1f} s" if generated else "cached"
        data_lines.append(
            f"- {spec.name}: {spec.description}, {dataset.total_dataset_bytes / 1e6:,.0f} MB "
            f"of data sets ({how}, {dataset.directory})"
        )
        datasets.append(dataset)

    backends, skipped = _backends(args.receivers)
    runs_dir = workdir / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    context = Context(dcmtk, runs_dir, _progress)
    measured = time.monotonic()
    ingest_rows, export_rows = _run_all(args, context, datasets, backends, skipped)
    finished = time.monotonic()

    failed = [row for row in (*ingest_rows, *export_rows) if row.failed]
    report = [
        "# dicom-gateway benchmark",
        "",
        f"Command: `{command_line(arguments)}`",
        "",
        *(f"- {line}" for line in machine(dcmtk.version())),
        "",
        "Data sets (explicit VR little endian, native 12-bit pixels in 16-bit words):",
        "",
        *data_lines,
        "",
        "## Ingest: storescu → receiver",
        "",
        ingest_table(ingest_rows),
    ]
    if export_rows:
        report += [
            "",
            "## Export: the CT series stored by the 1-association ingest row → storescp",
            "",
            export_table(export_rows),
        ]
    report += [
        "",
        "## Notes",
        "",
        NOTES,
        "",
        f"Total time {finished - began:.0f} s (measurements {finished - measured:.0f} s).",
    ]
    print("\n".join(report))
    if failed or args.keep:
        _progress(f"logs of the runs: {runs_dir}")
    else:
        shutil.rmtree(runs_dir, ignore_errors=True)
    if failed:
        _progress(
            f"{len(failed)} row(s) failed: " + ", ".join(f"{r.dataset}/{r.label}" for r in failed)
        )
        return 1
    return 0


def _backends(receivers: Sequence[str]) -> tuple[dict[str, Backend], dict[str, str]]:
    """The gateway backends to measure, and the reason for each one that is skipped."""
    backends: dict[str, Backend] = {}
    skipped: dict[str, str] = {}
    if "rabbitmq-s3" in receivers:
        try:
            found = RabbitMqS3.from_environment()
        except ServicesUnavailable as exc:  # configured, but not answering: a failure
            skipped["rabbitmq-s3"] = f"error: {exc}"
            _progress(f"RabbitMQ + S3 rows failed: {exc}")
        else:
            if isinstance(found, str):
                skipped["rabbitmq-s3"] = f"skipped: {found}"
                _progress(f"RabbitMQ + S3 rows skipped: {found}")
            else:
                backends["rabbitmq-s3"] = found
    if "embedded" in receivers:
        backends["embedded"] = Embedded()
    return backends, skipped


def _run_all(
    args: argparse.Namespace,
    context: Context,
    datasets: Sequence[DataSet],
    backends: dict[str, Backend],
    skipped: dict[str, str],
) -> tuple[list[Row], list[Row]]:
    """Every row, data set by data set; the export rows right after the CT series was stored."""
    ingest_rows: list[Row] = []
    export_rows: list[Row] = []
    queues: list[str] = []
    try:
        for dataset in datasets:
            exporting = dataset.spec.name == "ct" and not args.no_export
            if exporting:
                context.progress(f"{dataset.spec.name}: export by storescu")
                blank = new_row(dataset, EXPORT_REFERENCE, "storescu", 1)
                export_rows.append(_attempt(blank, partial(storescu_export, context, dataset)))
            # Not more associations than instances: 2 large instances make 2 associations.
            counts = dict.fromkeys(min(n, len(dataset.instances)) for n in args.associations)
            for associations in counts:
                for receiver in args.receivers:
                    if receiver == "storescp":
                        context.progress(
                            f"{dataset.spec.name}: {receiver}, {associations} association(s)"
                        )
                        blank = new_row(dataset, receiver, LABELS[receiver], associations)
                        run = partial(storescp_ingest, context, dataset, associations)
                        ingest_rows.append(_attempt(blank, run))
                        continue
                    for workers in args.workers if associations > 1 else (1,):
                        context.progress(
                            f"{dataset.spec.name}: {receiver}, {associations} association(s), "
                            f"{workers} worker(s)"
                        )
                        blank = new_row(dataset, receiver, LABELS[receiver], associations)
                        if receiver in skipped:
                            blank.note = skipped[receiver]
                            ingest_rows.append(blank)
                            continue
                        backend = backends[receiver]
                        blank.label = gateway_label(backend, workers)
                        row, exported = _gateway_rows(
                            context,
                            backend,
                            dataset,
                            (associations, workers),
                            blank,
                            export_to=queues if exporting and associations == 1 else None,
                        )
                        ingest_rows.append(row)
                        export_rows += [exported] if exported else []
    finally:
        for backend in backends.values():
            backend.close(queues)
    return ingest_rows, export_rows


def _gateway_rows(
    context: Context,
    backend: Backend,
    dataset: DataSet,
    concurrency: tuple[int, int],
    blank: Row,
    *,
    export_to: list[str] | None,
) -> tuple[Row, Row | None]:
    """The gateway's ingest row, and with ``export_to`` (the queues to delete at the end) the
    export of what it stored, before that is deleted."""
    with ExitStack() as stored_cleanup:
        associations, workers = concurrency
        run = partial(
            gateway_ingest, context, backend, dataset, associations, stored_cleanup, workers=workers
        )
        row, stored = _attempt_ingest(blank, run)
        if export_to is None or stored is None or row.failed:
            return row, None
        context.progress(f"{dataset.spec.name}: export by {backend.key}")
        blank = new_row(dataset, f"export-{backend.key}", export_label(backend), 1)
        return row, _attempt(blank, partial(gateway_export, context, stored, dataset, export_to))


def _attempt(blank: Row, run: Callable[[], Row]) -> Row:
    """The row ``run`` measures, or ``blank`` with the error that stopped it."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 (the one boundary: reported, and fails the run)
        blank.note = f"error: {exc}"
        _progress(f"{blank.dataset}/{blank.label}: {exc}")
        return blank


def _attempt_ingest(
    blank: Row, run: Callable[[], tuple[Row, StoredRun | None]]
) -> tuple[Row, StoredRun | None]:
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 (as in _attempt)
        blank.note = f"error: {exc}"
        _progress(f"{blank.dataset}/{blank.label}: {exc}")
        return blank, None
