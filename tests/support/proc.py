"""Reading a process's memory from /proc, for tests that bound it."""

from pathlib import Path


def memory_kib(pid: int, field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM`` for the peak) of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")
