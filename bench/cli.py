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
from dataclasses import dataclass
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
from bench.ingest_runs import Context
from bench.processes import Dcmtk
from bench.report import NOTES, command_line, export_table, ingest_table, machine
from bench.schedule import Plan, run_all
from gateway_client.testing import ServicesUnavailable

RECEIVERS = ("storescp", "rabbitmq-s3", "embedded")
DATASETS = ("ct", "small", "large")


@dataclass(frozen=True)
class Sizes:
    ct: int
    small: int
    large: int
    large_mb: int


FULL = Sizes(ct=500, small=2000, large=4, large_mb=100)
QUICK = Sizes(ct=100, small=400, large=2, large_mb=50)
#: Runs of every row, full and --quick: the report shows their medians.
REPEAT, QUICK_REPEAT = 3, 1
#: Small instances sent with Nagle's algorithm on.
NAGLE_COUNT = 150


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
        "--repeat",
        type=_positive,
        help=f"runs of every row, alternating with the other rows; the report shows medians "
        f"(default: {REPEAT}, with --quick {QUICK_REPEAT})",
    )
    parser.add_argument(
        "--nagle-count",
        type=_not_negative,
        default=NAGLE_COUNT,
        help="small instances sent by storescu with dcmtk's defaults (no TCP_NODELAY, Nagle's "
        "algorithm on) into storescp with its defaults and into the gateway; 0 skips these "
        "rows (default: %(default)s)",
    )
    parser.add_argument(
        "--max-event-bytes",
        type=_positive,
        help="ingest.max_event_bytes of the gateway rows (default: the gateway's, 1 MiB); "
        "above it an association's instance list goes into a manifest object",
    )
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


def _not_negative(text: str) -> int:
    if text.strip() == "0":
        return 0
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError("0 or more") from None


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

    nagle: DataSet | None = None
    if args.nagle_count > 0:
        spec = small_instances(args.nagle_count)
        _progress(f"data set for the Nagle rows: {spec.description}")
        nagle, _ = load_or_generate(spec, workdir / "data")
    plan = Plan(
        receivers=args.receivers,
        associations=args.associations,
        workers=args.workers,
        export=not args.no_export,
        repeat=args.repeat or (QUICK_REPEAT if args.quick else REPEAT),
        nagle=nagle,
    )

    backends, skipped = _backends(args.receivers)
    runs_dir = workdir / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    context = Context(dcmtk, runs_dir, _progress, args.max_event_bytes)
    measured = time.monotonic()
    results = run_all(plan, context, datasets, backends, skipped)
    finished = time.monotonic()

    failed = [row for row in results.all() if row.failed]
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
        f"Every row ran {plan.repeat} time(s), alternating with the other rows of its data "
        "set; each number is the median of its runs (answered s: median, and the range).",
        "",
        "## Ingest: storescu → receiver",
        "",
        ingest_table(results.ingest),
    ]
    if results.nagle:
        report += [
            "",
            f"## Ingest with Nagle's algorithm on: storescu (dcmtk's defaults, no "
            f"TCP_NODELAY) → receiver, {args.nagle_count} small instances",
            "",
            ingest_table(results.nagle),
        ]
    if results.export:
        report += [
            "",
            "## Export: the CT series stored by the 1-association ingest row → storescp",
            "",
            export_table(results.export),
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
