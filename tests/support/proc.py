"""Reading a process's memory from /proc, for tests that bound it."""

from pathlib import Path


def memory_kib(pid: int, field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM`` for the peak) of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def child_pids(parent: int) -> set[int]:
    """The processes whose parent is ``parent`` (a gateway's workers), from ``/proc``."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it has just gone
        if int(text[text.rindex(")") + 2 :].split()[1]) == parent:
            children.add(int(stat.parent.name))
    return children
