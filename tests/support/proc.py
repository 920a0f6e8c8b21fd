"""Reading processes from ``/proc``: memory, CPU time, children; for tests that bound a
process's memory and for the benchmarks' measurements."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

_KIB = 1024


def memory_kib(pid: int, field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM`` for the peak) of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def peak_rss(pid: int) -> int | None:
    """VmHWM (peak resident set size) of a running process, in bytes; None if unreadable."""
    try:
        return memory_kib(pid, "VmHWM") * _KIB
    except (OSError, AssertionError):  # gone, or a zombie without memory
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a running process has used so far; None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces) start at field 3 (state);
    # utime and stime are fields 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU time the whole machine has spent busy so far, over all its CPUs (``/proc/stat``:
    user, nice, system, irq, softirq and steal); None if unreadable."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu" or len(first) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _parents() -> dict[int, list[int]]:
    """Parent pid -> the pids of its children, for every process (from ``/proc/*/stat``)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it has just gone
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return parents


def child_pids(parent: int) -> set[int]:
    """The processes whose parent is ``parent`` (a gateway's workers)."""
    return set(_parents().get(parent, []))


def descendants(roots: Sequence[int]) -> set[int]:
    """The processes below ``roots`` (children, their children...)."""
    parents = _parents()
    found: set[int] = set()
    pending = list(roots)
    while pending:
        children = parents.get(pending.pop(), [])
        found.update(children)
        pending += children
    return found
