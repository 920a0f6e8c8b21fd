"""Child processes: which dcmtk to run, timed sends, peak memory and CPU of process trees.

dcmtk's tools are Debian's (``/usr/bin``) unless ``--dcmtk-bin`` names another directory, else
the first directory on ``PATH`` with dcmtk's own ``storescu`` (not the Python script of the same
name that pynetdicom installs into a virtual environment). Every dcmtk process runs with the
tests' environment for them (:func:`tests.support.dcmtk.dcmtk_environment`, ``TCP_NODELAY=1``),
except in the Nagle rows (dcmtk's defaults).
The readers of ``/proc`` are :mod:`tests.support.proc`'s.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from tests.support.dcmtk import DCMTK_BIN, dcmtk_environment
from tests.support.proc import cpu_seconds, descendants, machine_busy_seconds, peak_rss


class BenchError(RuntimeError):
    """A run could not be carried out (a tool missing, a process that did not start or stop)."""


@dataclass(frozen=True)
class Dcmtk:
    """Where dcmtk's binaries are, and its version."""

    bin_dir: Path

    @classmethod
    def find(cls, bin_dir: Path | None = None) -> Dcmtk:
        """dcmtk in ``bin_dir``, else Debian's, else the first directory on ``PATH`` with
        dcmtk's storescu."""
        if bin_dir is not None:
            if not _is_native(bin_dir / "storescu"):
                raise BenchError(f"no dcmtk storescu in {bin_dir}")
            return cls(bin_dir)
        if _is_native(DCMTK_BIN / "storescu"):
            return cls(DCMTK_BIN)
        for entry in os.environ.get("PATH", "").split(os.pathsep):
            if entry and _is_native(Path(entry) / "storescu"):
                return cls(Path(entry))
        raise BenchError("dcmtk's storescu is not on PATH (install dcmtk, or give --dcmtk-bin)")

    def tool(self, name: str) -> str:
        path = self.bin_dir / name
        if not _is_native(path):
            raise BenchError(f"no dcmtk {name} in {self.bin_dir}")
        return str(path)

    def version(self) -> str:
        result = subprocess.run(
            [self.tool("storescu"), "--version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        first = next((line for line in result.stdout.splitlines() if line.strip()), "unknown")
        return first.strip().strip("$").replace("dcmtk: ", "").strip()


def _is_native(path: Path) -> bool:
    """An executable that is not a script (pynetdicom's ``storescu`` is one)."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        return False
    with path.open("rb") as binary:
        return binary.read(2) != b"#!"


# --- memory ---------------------------------------------------------------------------------


def busy_between(before: float | None) -> float | None:
    """The machine's busy CPU seconds since ``before`` (a :func:`machine_busy_seconds`)."""
    after = machine_busy_seconds()
    return None if before is None or after is None else after - before


def tree_cpu_seconds(pid: int) -> float | None:
    """:func:`cpu_seconds` of a process and its running descendants (worker processes)."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(cpu_seconds(child) or 0.0 for child in descendants([pid]))


def tree_peak_rss(pid: int) -> int | None:
    """:func:`peak_rss` of a process plus that of each running descendant: an upper bound of
    what they held together (their peaks need not coincide)."""
    own = peak_rss(pid)
    if own is None:
        return None
    return own + sum(peak_rss(child) or 0 for child in descendants([pid]))


class PeakRssSampler:
    """The largest VmHWM of some processes and their descendants while the block runs.

    For processes that end before their VmHWM can be read at the end: storescu, and
    storescp's ``--fork`` children. (The kernel's ``ru_maxrss`` of a child that this Python
    process spawned starts with this process's own size, so it cannot be used.) VmHWM only
    grows, so a sample every ``interval`` misses at most the last moments of a process;
    descendants are looked for every ``scan_interval``, as that reads all of ``/proc``.
    """

    def __init__(
        self,
        pids: Sequence[int] = (),
        *,
        with_descendants: bool = False,
        interval: float = 0.02,
        scan_interval: float = 0.2,
    ) -> None:
        self._roots = list(pids)
        self._with_descendants = with_descendants
        self._interval = interval
        self._scan_interval = scan_interval
        self._watched: set[int] = set(pids)
        self._peaks: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def add(self, pid: int) -> None:
        with self._lock:
            self._roots.append(pid)
            self._watched.add(pid)

    @property
    def peak(self) -> int:
        with self._lock:
            return max(self._peaks.values(), default=0)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        scanned = 0.0
        while not self._stop.is_set():
            if self._with_descendants and time.monotonic() - scanned >= self._scan_interval:
                with self._lock:
                    roots = list(self._roots)
                found = descendants(roots)
                scanned = time.monotonic()
                with self._lock:
                    self._watched |= found
            self._sample()
            self._stop.wait(self._interval)

    def _sample(self) -> None:
        with self._lock:
            watched = list(self._watched)
        for pid in watched:
            value = peak_rss(pid)
            if value is not None:
                with self._lock:
                    self._peaks[pid] = max(value, self._peaks.get(pid, 0))


# --- timed sends ------------------------------------------------------------------------


@dataclass
class SendResult:
    """One batch of storescu processes started together."""

    started: float
    #: calling AE title → monotonic time its storescu exited
    exits: dict[str, float] = field(default_factory=dict)
    #: calling AE title → what went wrong
    failures: dict[str, str] = field(default_factory=dict)
    #: largest peak RSS of the senders, bytes
    peak_rss: int = 0
    #: CPU seconds the whole machine was busy from the start to the last exit (every CPU)
    machine_busy_seconds: float | None = None

    @property
    def finished(self) -> float:
        return max(self.exits.values(), default=self.started)

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def calling_ae_titles(count: int) -> list[str]:
    return [f"BENCH{index + 1}" for index in range(count)]


def send_with_storescu(
    dcmtk: Dcmtk,
    port: int,
    called_ae: str,
    groups: Sequence[Sequence[Path]],
    *,
    log_dir: Path,
    timeout: float,
    nodelay: bool = True,
) -> SendResult:
    """Run one ``storescu`` per group of files at once, each in one association, and time it.

    The clock starts just before the first process is spawned; each process's exit (after
    the last C-STORE response and the release) is taken by a thread waiting for it. Without
    ``nodelay`` storescu runs with dcmtk's defaults (Nagle's algorithm on).
    """
    environment = dcmtk_environment(nodelay=nodelay)
    log_dir.mkdir(parents=True, exist_ok=True)
    titles = calling_ae_titles(len(groups))
    commands = [
        [
            dcmtk.tool("storescu"),
            "-R",  # only the presentation contexts the files need
            "-aet",
            title,
            "-aec",
            called_ae,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ]
        for title, files in zip(titles, groups, strict=True)
    ]
    logs = {title: log_dir / f"storescu-{title}.log" for title in titles}
    result = SendResult(started=time.monotonic())
    lock = threading.Lock()

    def wait(title: str, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        ended = time.monotonic()
        with lock:
            result.exits[title] = ended

    waiters = []
    processes: dict[str, subprocess.Popen[bytes]] = {}
    with PeakRssSampler() as senders:
        busy_before = machine_busy_seconds()
        result.started = time.monotonic()
        for title, command in zip(titles, commands, strict=True):
            with logs[title].open("wb") as log:
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=environment
                )
            processes[title] = process
            senders.add(process.pid)
            waiter = threading.Thread(target=wait, args=(title, process), daemon=True)
            waiter.start()
            waiters.append(waiter)
        deadline = time.monotonic() + timeout
        for waiter in waiters:
            waiter.join(max(0.0, deadline - time.monotonic()))
        for title, process in processes.items():
            if process.poll() is None:
                process.kill()
                result.failures[title] = f"storescu did not finish within {timeout:g} s"
        for waiter in waiters:
            waiter.join()
        result.machine_busy_seconds = busy_between(busy_before)
    result.peak_rss = senders.peak
    for title, process in processes.items():
        if title in result.failures:
            continue
        problems = _problems(logs[title].read_text(errors="replace"))
        if process.returncode != 0 or problems:
            result.failures[title] = (
                f"storescu exited with {process.returncode}: " + "; ".join(problems[:3])
            ).strip()
    return result


def _problems(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(("E:", "F:"))]


def split(paths: Sequence[Path], parts: int) -> list[list[Path]]:
    """``paths`` in ``parts`` groups of (nearly) equal size, in order."""
    size, extra = divmod(len(paths), parts)
    groups, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        groups.append(list(paths[start:end]))
        start = end
    return [group for group in groups if group]
