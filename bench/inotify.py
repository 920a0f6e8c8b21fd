"""Files written and closed in one directory, as Linux reports them (inotify, via ctypes).

storescp (``+B``) writes each received instance into its output directory and closes it when
the last fragment is in: ``IN_CLOSE_WRITE`` says an instance is complete. A file renamed into
the directory (``IN_MOVED_TO``) counts as complete too.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
from pathlib import Path
from types import TracebackType
from typing import Self

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CLOEXEC = 0o2000000
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)


def parse_events(buffer: bytes) -> list[str]:
    """The names in a buffer of ``struct inotify_event`` records (each name NUL padded)."""
    names = []
    offset = 0
    while offset + _HEADER.size <= len(buffer):
        _, _, _, length = _HEADER.unpack_from(buffer, offset)
        offset += _HEADER.size
        name = buffer[offset : offset + length].rstrip(b"\0")
        offset += length
        if name:
            names.append(os.fsdecode(name))
    return names


class ClosedFiles:
    """Names of the files closed after writing (or moved) in ``directory`` since opening."""

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd: int = libc.inotify_init1(IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        watch = libc.inotify_add_watch(
            self._fd, os.fsencode(directory), IN_CLOSE_WRITE | IN_MOVED_TO
        )
        if watch < 0:
            errno = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(errno, f"inotify_add_watch {directory}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def read(self, timeout: float) -> list[str]:
        """The names reported so far, waiting up to ``timeout`` seconds for the first."""
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return []
        return parse_events(os.read(self._fd, 1 << 16))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
