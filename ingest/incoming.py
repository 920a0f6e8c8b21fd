"""Where pynetdicom writes each arriving data set: the spool's ``incoming/`` directory.

pynetdicom's chunked receive creates its file with ``NamedTemporaryFile`` and lets any write
error escape from its state machine thread, which kills the association without an answer.
:class:`IncomingFiles` is installed as that factory instead. Its files live on the spool's
filesystem (so adopting one is a rename) and swallow write errors such as a full disk: the
failure is remembered, the partial data is dropped to give the space back, and the C-STORE
handler answers *out of resources* for that instance while the association carries on.

A data set that crosses a receive limit (ingest/receive_limits.py) fails the same way. Which
association a file belongs to is known by the thread that opens it: pynetdicom opens and
writes it on the association's DUL thread, and the C-STORE fast path runs there too, so the
association's :class:`ReceiveWatch` is registered for that thread (:meth:`IncomingFiles.watch`).
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import BinaryIO, Protocol

from gateway.errors import LimitCrossed
from gateway.fsync import start_writeback


class InstanceWatch(Protocol):
    """The receive limits, applied to one data set as it is written."""

    def refusal(self, count: int) -> LimitCrossed | None:
        """``count`` more bytes arrived (0 when the data set begins): None to write them, else
        why the data set is refused; it is then written no further, but still asked about
        each fragment up to its last (a trickle is judged to the end)."""


class ReceiveWatch(Protocol):
    """The receive limits of one association."""

    def begin(self) -> InstanceWatch:
        """A data set of the association begins."""


class IncomingFile:
    """The subset of a ``NamedTemporaryFile`` that pynetdicom uses, tolerant of write errors."""

    def __init__(self, path: Path, failures: IncomingFiles, watch: InstanceWatch | None) -> None:
        self.name = str(path)
        self._path = path
        self._failures = failures
        self._out: BinaryIO = path.open("wb")
        self._written_back = 0
        self._watch = watch
        self.failed = False
        self._check(0)

    @property
    def file(self) -> IncomingFile:
        # pynetdicom calls ``.file.flush()`` on a NamedTemporaryFile
        return self

    def _fail(self, exc: OSError | LimitCrossed) -> None:
        self.failed = True
        self._failures.record(self.name, exc)
        try:
            self._out.truncate(0)  # give the space back to the other associations
        except OSError:
            self._failures.record(self.name, exc)

    def _check(self, count: int) -> bool:
        """Whether ``count`` more bytes are to be written: the file has not failed, and the
        receive limits allow them (asked even after a failure: see InstanceWatch)."""
        refusal = None if self._watch is None else self._watch.refusal(count)
        if refusal is not None and not self.failed:
            self._fail(refusal)
        return not self.failed

    def write(self, data: bytes | memoryview) -> int:
        if self._check(len(data)):
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
        self._failures: dict[str, OSError | LimitCrossed] = {}
        self._watches: dict[threading.Thread, ReceiveWatch] = {}

    def __call__(self, delete: bool = False, mode: str = "wb", suffix: str = "") -> IncomingFile:
        if delete or mode != "wb":
            raise ValueError("incoming files are always opened 'wb' and never self-deleting")
        with self._lock:
            watch = self._watches.get(threading.current_thread())
        return IncomingFile(
            self._directory / f"{uuid.uuid4().hex}{suffix}",
            self,
            None if watch is None else watch.begin(),
        )

    def watch(self, receiving: threading.Thread, watch: ReceiveWatch) -> None:
        """Apply ``watch`` to the files that ``receiving`` (an association's DUL thread) opens
        from now on."""
        with self._lock:
            # Threads that ended are dropped here, so the table holds no more than the
            # associations open now and those ended since the last admission.
            self._watches = {t: w for t, w in self._watches.items() if t.is_alive()}
            self._watches[receiving] = watch

    def record(self, name: str, exc: OSError | LimitCrossed) -> None:
        with self._lock:
            self._failures.setdefault(name, exc)

    def take_failure(self, path: os.PathLike[str] | str) -> OSError | LimitCrossed | None:
        """Why the file at ``path`` failed, if it did: a write error, or a receive limit it
        crossed (asked once)."""
        with self._lock:
            return self._failures.pop(str(path), None)
