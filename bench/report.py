"""The measured rows, the markdown report and the machine it ran on."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.integrity import Verdict

#: Receiver (or sender) keys that the ratios are taken against.
REFERENCE = "storescp"
EXPORT_REFERENCE = "storescu"
#: The ceiling rows: what this machine's S3 and RabbitMQ allow (bench.ceilings).
INGEST_CEILING = "ceiling-s3"
EXPORT_CEILING = "ceiling-export"
#: The gateway rows compared with each ceiling (the ceilings run on RabbitMQ + S3 only).
CEILING_OF = {"rabbitmq-s3": INGEST_CEILING, "export-rabbitmq-s3": EXPORT_CEILING}


@dataclass
class Row:
    """One measurement: a data set through one receiver (ingest) or sender (export)."""

    dataset: str
    who: str
    label: str
    associations: int
    instances: int
    dataset_bytes: int
    #: what the sender saw: its start to its exit (the last release response); the median
    #: of the runs once merged (bench.stats)
    seconds: float | None = None
    #: storescu exit to event arrival, the worst association (ingest rows of the gateway)
    event_seconds: float | None = None
    #: the senders' start to the arrival of the last event (ingest rows of the gateway)
    first_event_seconds: float | None = None
    #: how many runs the numbers are the median of, and their ``seconds``
    runs: int = 1
    samples: tuple[float, ...] = ()
    peak_rss: int | None = None
    #: user + system CPU seconds of the receiving process while the senders ran (ingest rows
    #: of a single receiving process)
    receiver_cpu_seconds: float | None = None
    #: CPU seconds the whole machine was busy during ``seconds`` (every process, every CPU)
    machine_busy_seconds: float | None = None
    verdict: Verdict | None = None
    #: why the row has no numbers (skipped, failed)
    note: str = ""

    @property
    def skipped(self) -> bool:
        return self.note.startswith("skipped")

    @property
    def failed(self) -> bool:
        """Lost or altered instances, or anything else that went wrong (every note but a skip)."""
        if self.skipped:
            return False
        return self.verdict is None or not self.verdict.ok or bool(self.note)

    @property
    def per_second(self) -> float | None:
        return self.instances / self.seconds if self.seconds else None

    @property
    def megabytes_per_second(self) -> float | None:
        return self.dataset_bytes / 1e6 / self.seconds if self.seconds else None

    @property
    def receiver_cpu_percent(self) -> float | None:
        if self.receiver_cpu_seconds is None or not self.seconds:
            return None
        return 100 * self.receiver_cpu_seconds / self.seconds

    @property
    def machine_busy_percent(self) -> float | None:
        """How busy the machine's CPUs were during the row (100: all of them, all the time)."""
        cpus = os.cpu_count()
        if self.machine_busy_seconds is None or not self.seconds or not cpus:
            return None
        return 100 * self.machine_busy_seconds / (self.seconds * cpus)


def _number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def speed_ratio(ours: float | None, reference: float | None) -> float | None:
    """How fast ours is next to the reference, from their times: ``reference / ours`` (so
    0.50 = took twice as long); None when either is missing."""
    if ours is None or reference is None or ours <= 0:
        return None
    return reference / ours


def _ratio(
    row: Row,
    rows: Sequence[Row],
    reference: str | None,
    seconds: Callable[[Row], float | None] = lambda row: row.seconds,
) -> str:
    """``row`` next to the row of ``reference`` with its data set and associations."""
    if reference is None:
        return ""
    if row.who == reference:
        return "1.00"
    anchor = next(
        (
            r
            for r in rows
            if r.who == reference
            and r.dataset == row.dataset
            and r.associations == row.associations
            and seconds(r)
        ),
        None,
    )
    ratio = speed_ratio(seconds(row), None if anchor is None else seconds(anchor))
    return "n/a" if ratio is None else f"{ratio:.2f}"


def _ceiling_ratio(row: Row, rows: Sequence[Row], value: Callable[[Row], float | None]) -> str:
    """``row`` next to its ceiling row; empty for rows without one."""
    reference = CEILING_OF.get(row.who)
    if row.who in CEILING_OF.values():
        reference = row.who
    return _ratio(row, rows, reference, value)


def _seconds(row: Row) -> str:
    """The median, and the range when there were several runs."""
    median = _number(row.seconds, 2)
    if len(row.samples) < 2:
        return median
    return f"{median} ({min(row.samples):.2f}-{max(row.samples):.2f})"


def _megabytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:,.0f}"


def _verdict(row: Row) -> str:
    if row.note:
        return row.note if row.verdict is None else f"{row.verdict.describe()}; {row.note}"
    return "n/a" if row.verdict is None else row.verdict.describe()


def ingest_table(rows: Sequence[Row]) -> str:
    lines = [
        "| data set | receiver | assocs | runs | instances | MB | answered s | inst/s | MB/s "
        "| first byte→event s | release→event ms | peak RSS MB | receiver CPU % "
        "| machine busy % | answered ours/storescp | first byte→event ours/ceiling | integrity |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        event_ms = None if row.event_seconds is None else row.event_seconds * 1000
        lines.append(
            f"| {row.dataset} | {row.label} | {row.associations} | {row.runs} "
            f"| {row.instances:,} | {_megabytes(row.dataset_bytes)} | {_seconds(row)} "
            f"| {_number(row.per_second)} | {_number(row.megabytes_per_second)} "
            f"| {_number(row.first_event_seconds, 2)} | {_number(event_ms, 0)} "
            f"| {_megabytes(row.peak_rss)} | {_number(row.receiver_cpu_percent, 0)} "
            f"| {_number(row.machine_busy_percent, 0)} | {_ratio(row, rows, REFERENCE)} "
            f"| {_ceiling_ratio(row, rows, lambda r: r.first_event_seconds)} "
            f"| {_verdict(row)} |"
        )
    return "\n".join(lines)


def export_table(rows: Sequence[Row]) -> str:
    lines = [
        "| data set | sender → storescp | runs | instances | MB | seconds | inst/s | MB/s "
        "| sender peak RSS MB | machine busy % | ours/storescu | ours/ceiling | integrity |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.dataset} | {row.label} | {row.runs} | {row.instances:,} "
            f"| {_megabytes(row.dataset_bytes)} | {_seconds(row)} "
            f"| {_number(row.per_second)} | {_number(row.megabytes_per_second)} "
            f"| {_megabytes(row.peak_rss)} | {_number(row.machine_busy_percent, 0)} "
            f"| {_ratio(row, rows, EXPORT_REFERENCE)} "
            f"| {_ceiling_ratio(row, rows, lambda r: r.seconds)} | {_verdict(row)} |"
        )
    return "\n".join(lines)


def machine(dcmtk_version: str) -> list[str]:
    return [
        f"CPUs: {os.cpu_count()} ({_cpu_model()})",
        f"memory: {_memory()}",
        f"OS: {platform.system()} {platform.release()}",
        f"Python: {sys.version.split()[0]} ({platform.python_implementation()})",
        f"dcmtk: {dcmtk_version}",
        f"pynetdicom: {_version('pynetdicom')}, pydicom: {_version('pydicom')}",
    ]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown model"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "-m", "bench", *argv])


NOTES = """\
- answered s: from the start of the sending storescu process(es) to the exit of the last one,
  i.e. until the last instance was acknowledged and the association released (what a
  modality sees); inst/s and MB/s from that (MB = 10^6 bytes of data set, what travels over
  the wire). Each number is the median of the row's runs; answered s also shows their range.
- first byte→event: from the start of the senders to the arrival of the last association's
  event (what a pipeline sees): at an exclusive queue bound to `association.released.#`
  (RabbitMQ) or in the local event log (read every 5 ms).
- release→event: from a storescu's exit to the arrival of its association's event; the worst
  association of a run. It includes the upload to object storage.
- ceiling (ingest, RabbitMQ + S3 only): storescp (`+B`) receiving while a separate uploader
  puts each file to the same S3 as soon as storescp has closed it (inotify, 8 threads), then
  one message published with a publisher confirm and awaited on a queue: what this machine's
  S3 and RabbitMQ allow with dcmtk doing the DICOM. Its integrity is checked on the objects.
- ceiling (export): the slower of storescu sending the files from local disk to storescp and
  of an 8-thread download of the same objects from the same S3 (its row: S3 download).
- ratios are speeds within this report, from the medians: the reference's time divided by
  the row's (ours/storescp, ours/storescu: answered or sending time; ours/ceiling: first
  byte→event for ingest, request→completion for export). 0.50 = took twice as long.
- Nagle on: storescu and storescp with dcmtk's defaults (no TCP_NODELAY in their
  environment), the way many senders in the field run; one association of small instances.
- peak RSS: VmHWM of the receiving process, read at the end of the run; for `storescp
  --fork` the largest of the parent and its children, sampled every 20 ms while they run. For
  export, of the sending process (storescu sampled the same way).
- RabbitMQ + S3: each row has a bucket of its own, written to once before the gateway starts
  (SeaweedFS allocates a new bucket's volumes on its first write, which takes up to a second).
- 4 associations: the files split into 4 storescu processes started together; storescp then
  runs with `--fork`, the gateway with 1 process or with `ingest.workers` worker processes
  ("N workers"); a worker row's peak RSS is the sum of every process's peak, its CPU that
  of all of them.
- receiver CPU %: user + system CPU time of the receiving process while the senders ran, in
  percent of one core (n/a for `storescp --fork`, whose children are separate processes). A
  gateway row near 100 % with several associations is bound by one Python process (the GIL).
- machine busy %: how busy all of the machine's CPUs were during the row's time (answered, or
  request to completion, or the download), every process counted (`/proc/stat`): 100 % is
  every CPU all the time. A row near 100 % was bound by the machine's CPUs, shared by the
  senders, the receiver, the S3 server and RabbitMQ, not by waiting; the time such a row
  takes is at least the CPU time of all of them divided by the number of CPUs.
- integrity: every sent instance's data set is compared with what the receiver holds (for the
  gateway, the stored object after our file meta), in every run; any loss or change fails
  the run.
- senders and storescp run with TCP_NODELAY=1 (except the Nagle rows) and dcmtk's default
  PDU sizes (storescp accepts 16 KiB PDUs, the gateway 256 KiB)."""
