"""The measured rows, the markdown report and the machine it ran on."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.integrity import Verdict

#: Receiver (or sender) keys that the ratios are taken against.
REFERENCE = "storescp"
EXPORT_REFERENCE = "storescu"


@dataclass
class Row:
    """One measurement: a data set through one receiver (ingest) or sender (export)."""

    dataset: str
    who: str
    label: str
    associations: int
    instances: int
    dataset_bytes: int
    seconds: float | None = None
    #: storescu exit to event arrival, the worst association (ingest rows of the gateway)
    event_seconds: float | None = None
    peak_rss: int | None = None
    #: user + system CPU seconds of the receiving process while the senders ran (ingest rows
    #: of a single receiving process)
    receiver_cpu_seconds: float | None = None
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


def _number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(row: Row, rows: Sequence[Row], reference: str) -> str:
    if row.who == reference:
        return "1.00"
    anchor = next(
        (
            r
            for r in rows
            if r.who == reference
            and r.dataset == row.dataset
            and r.associations == row.associations
            and r.per_second
        ),
        None,
    )
    if anchor is None or row.per_second is None or anchor.per_second is None:
        return "n/a"
    return f"{row.per_second / anchor.per_second:.2f}"


def _megabytes(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:,.0f}"


def _verdict(row: Row) -> str:
    if row.note:
        return row.note if row.verdict is None else f"{row.verdict.describe()}; {row.note}"
    return "n/a" if row.verdict is None else row.verdict.describe()


def ingest_table(rows: Sequence[Row]) -> str:
    lines = [
        "| data set | receiver | assocs | instances | MB | seconds | inst/s | MB/s "
        "| release→event ms | peak RSS MB | receiver CPU % | ours/storescp | integrity |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        event_ms = None if row.event_seconds is None else row.event_seconds * 1000
        lines.append(
            f"| {row.dataset} | {row.label} | {row.associations} | {row.instances:,} "
            f"| {_megabytes(row.dataset_bytes)} | {_number(row.seconds, 2)} "
            f"| {_number(row.per_second)} | {_number(row.megabytes_per_second)} "
            f"| {_number(event_ms, 0)} | {_megabytes(row.peak_rss)} "
            f"| {_number(row.receiver_cpu_percent, 0)} "
            f"| {_ratio(row, rows, REFERENCE)} | {_verdict(row)} |"
        )
    return "\n".join(lines)


def export_table(rows: Sequence[Row]) -> str:
    lines = [
        "| data set | sender → storescp | instances | MB | seconds | inst/s | MB/s "
        "| sender peak RSS MB | ours/storescu | integrity |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.dataset} | {row.label} | {row.instances:,} "
            f"| {_megabytes(row.dataset_bytes)} | {_number(row.seconds, 2)} "
            f"| {_number(row.per_second)} | {_number(row.megabytes_per_second)} "
            f"| {_megabytes(row.peak_rss)} | {_ratio(row, rows, EXPORT_REFERENCE)} "
            f"| {_verdict(row)} |"
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
- seconds: from the start of the sending storescu process(es) to the exit of the last one,
  i.e. until the last instance was acknowledged and the association released; inst/s and MB/s
  from that (MB = 10^6 bytes of data set, what travels over the wire).
- release→event: from a storescu's exit to the arrival of its association's event at an
  exclusive queue bound to `association.released.#` (RabbitMQ) or in the local event log (read
  every 5 ms); the worst association of the row. It includes the upload to object storage.
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
- integrity: every sent instance's data set is compared with what the receiver holds (for the
  gateway, the stored object after our file meta); any loss or change fails the run.
- senders and storescp run with TCP_NODELAY=1 and dcmtk's default PDU sizes (storescp
  accepts 16 KiB PDUs, the gateway 256 KiB)."""
