"""Where pynetdicom writes each arriving data set: the spool's ``incoming/`` directory.

pynetdicom's chunked receive creates its file with ``NamedTemporaryFile`` and lets any write
error escape from its state machine thread, which kills the association without an answer.
:class:`IncomingFiles` is installed as that factory instead. Its files live on the spool's
filesystem (so adopting one is a rename) and swallow write errors such as a full disk: the
failure is remembered, the partial data is dropped to give the space back, and the C-STORE
handler answers *out of resources* for that instance while the association carries on.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import BinaryIO

from gateway.fsync import start_writeback


class IncomingFile:
    """The subset of a ``NamedTemporaryFile`` that pynetdicom uses, tolerant of write errors."""

    def __init__(self, path: Path, failures: IncomingFiles) -> None:
        self.name = str(path)
        self._path = path
        self._failures = failures
        self._out: BinaryIO = path.open("wb")
        self._written_back = 0
        self.failed = False

    @property
    def file(self) -> IncomingFile:
        # pynetdicom calls ``.file.flush()`` on a NamedTemporaryFile
        return self

    def _fail(self, exc: OSError) -> None:
        self.failed = True
        self._failures.record(self.name, exc)
        try:
            self._out.truncate(0)  # give the space back to the other associations
        except OSError:
            self._failures.record(self.name, exc)

    def write(self, data: bytes | memoryview) -> int:
        if not self.failed:
            try:
                self._out.write(data)
            except OSError as exc:
                self._fail(exc)
        return len(data)

    def flush(self) -> None:
        """pynetdicom flushes after each fragment: start that fragment's way to the disk."""
        if not self.failed:
            try:
                self._out.flush()
                end = self._out.tell()
            except OSError as exc:
                self._fail(exc)
                return
            start_writeback(self._out.fileno(), self._written_back, end - self._written_back)
            self._written_back = end

    def close(self) -> None:
        try:
            self._out.close()
        except OSError as exc:
            if not self.failed:
                self._fail(exc)


class IncomingFiles:
    """Factory for :class:`IncomingFile` with the ``NamedTemporaryFile`` call signature."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._failures: dict[str, OSError] = {}

    def __call__(self, delete: bool = False, mode: str = "wb", suffix: str = "") -> IncomingFile:
        if delete or mode != "wb":
            raise ValueError("incoming files are always opened 'wb' and never self-deleting")
        return IncomingFile(self._directory / f"{uuid.uuid4().hex}{suffix}", self)

    def record(self, name: str, exc: OSError) -> None:
        with self._lock:
            self._failures.setdefault(name, exc)

    def take_failure(self, path: os.PathLike[str] | str) -> OSError | None:
        """The write error of the file at ``path``, if there was one (asked once)."""
        with self._lock:
            return self._failures.pop(str(path), None)
