"""What the services' SQLite files (journal, event log, export ledger) have in common.

Each is opened in WAL mode with ``synchronous=FULL``, so that a commit is on disk when it
returns: the services answer senders and acknowledge messages on the strength of it. A
connection is shared by the threads of one process behind a lock; other processes wait for the
write lock up to :data:`BUSY_TIMEOUT_SECONDS`, or, for a file that several processes write all
the time, queue for it on a file lock (:class:`ProcessesWriteLock`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType

from gateway.errors import GatewayError
from gateway.fsync import make_directories

#: How long a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_SECONDS = 10.0


def connect_durable(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating it and its directory if needed) and apply ``schema``.

    Raises :class:`sqlite3.Error` or :class:`OSError`; callers name the file in their error.
    """
    # SQLite syncs the directory it creates its write-ahead log in, not that directory's own
    # name in its parent.
    make_directories(path.parent)
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(schema)
    return db


class ProcessesWriteLock:
    """The write lock of a SQLite file that several processes write at a high rate.

    SQLite makes a writer that finds the file locked by another process sleep and try again
    (sleeps growing to 100 ms), while the threads of the process holding it take it back to
    back: under a burst (ingest's worker processes each journaling hundreds of instances a
    second) a waiting process saw none of its tries succeed for the whole busy timeout, and an
    association was refused with "database is locked". Here the writers of every process
    queue on a POSIX record lock of a file beside the database, which wakes a waiter as soon
    as the lock is free; the process's own threads queue on :attr:`threads` first (the record
    lock is the process's), which also guards the shared connection for reads. A record lock,
    not ``flock``: a forked child does not inherit it, and the kernel drops it with the process
    that holds it, whatever that process's children still have open.
    """

    def __init__(self, database: Path) -> None:
        self.threads = threading.Lock()
        self._fd = os.open(f"{database}.writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self) -> None:
        self.threads.acquire()
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self.threads.release()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        finally:
            self.threads.release()

    def close(self) -> None:
        with self.threads:
            os.close(self._fd)


@contextmanager
def transaction(
    db: sqlite3.Connection,
    lock: threading.Lock | AbstractContextManager[None],
    error: type[GatewayError],
    what: str,
    *,
    durable_with_next: bool = False,
) -> Iterator[sqlite3.Cursor]:
    """One write transaction, taken at once (``BEGIN IMMEDIATE``) and committed on exit.

    Rolled back on any exception; an SQLite error becomes ``error`` saying ``what`` failed.
    ``durable_with_next``: commit without waiting for the disk (``synchronous=NORMAL``). The
    write-ahead log is appended in order, so the next ordinary commit's fsync makes this one
    durable too; for a caller whose record only counts once a later record exists.
    """
    with lock:
        try:
            cursor = db.cursor()
        except sqlite3.Error as exc:
            raise error(f"{what}: {exc}") from exc
        try:
            if durable_with_next:
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("BEGIN IMMEDIATE")
            yield cursor
            cursor.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise error(f"{what}: {exc}") from exc
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            try:
                if durable_with_next:
                    # Every other commit on this connection must wait for the disk again.
                    cursor.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                # Every later commit would then be taken as durable without being so; a
                # closed connection makes them fail instead, and a restart recovers.
                db.close()
                raise error(f"{what}: cannot restore synchronous commits: {exc}") from exc
            finally:
                cursor.close()
