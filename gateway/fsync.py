"""Durability helpers: a file's data is only safe once the file *and* its directory are synced."""

import ctypes
import os
from pathlib import Path

#: Linux's ``sync_file_range`` flag "start writing these pages out, do not wait".
_SYNC_FILE_RANGE_WRITE = 2


def _find_sync_file_range() -> "ctypes._NamedFuncPointer | None":
    function = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        function.restype = ctypes.c_int
    return function


_sync_file_range = _find_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing a just-written range to disk, without waiting for it.

    A file received in pieces is then mostly on disk by the time its last piece arrives, and
    the ``fsync`` that must precede the answer to the sender waits only for the tail. Where
    the call does not exist (not Linux) this does nothing; a failure here changes nothing
    either, because only the ``fsync`` decides durability and reports errors.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directories(path: Path) -> None:
    """``mkdir -p`` whose result survives a power cut: each directory it makes is synced in
    its parent. ``mkdir`` alone leaves the new name to chance: a cut can take it, and every
    file synced under it, away (found by tests/integration/test_ingest_power_loss.py). A
    directory that exists already is taken as durable."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise
        fsync_directory(directory.parent)
