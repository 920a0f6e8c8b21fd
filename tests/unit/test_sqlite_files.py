"""A commit that waits for the next one's fsync must never leave the connection that way; the
writers of several processes queue for the write lock."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gateway.errors import JournalError
from gateway.sqlite_files import ProcessesWriteLock, connect_durable, transaction

FULL = 2
SCHEMA = "CREATE TABLE IF NOT EXISTS rows (value INTEGER NOT NULL);"


def synchronous(db_path: Path, durable_with_next: bool, fail: BaseException | None) -> int:
    db = connect_durable(db_path, SCHEMA)
    lock = threading.Lock()
    expected = contextlib.nullcontext() if fail is None else pytest.raises(type(fail))
    with (
        expected,
        transaction(
            db, lock, JournalError, "test write", durable_with_next=durable_with_next
        ) as cur,
    ):
        cur.execute("INSERT INTO rows (value) VALUES (1)")
        if fail is not None:
            raise fail
    level = int(db.execute("PRAGMA synchronous").fetchone()[0])
    db.close()
    return level


@pytest.mark.parametrize(
    ("durable_with_next", "fail"),
    [
        (False, None),
        (True, None),
        (True, RuntimeError("the caller's own error")),
        (True, JournalError("refused inside the transaction")),
    ],
)
def test_every_later_commit_waits_for_the_disk_again(
    tmp_path: Path, durable_with_next: bool, fail: BaseException | None
) -> None:
    assert synchronous(tmp_path / "db.sqlite3", durable_with_next, fail) == FULL


def test_a_deferred_commit_is_committed(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    synchronous(path, durable_with_next=True, fail=None)
    db = connect_durable(path, SCHEMA)
    assert db.execute("SELECT count(*) FROM rows").fetchone()[0] == 1
    db.close()


def test_the_write_lock_of_another_process_is_waited_for_then_taken(tmp_path: Path) -> None:
    database = tmp_path / "journal.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    this_process = ProcessesWriteLock(database)
    taken = threading.Event()

    def write() -> None:
        with this_process:
            taken.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not taken.wait(0.2), "the lock was taken while another process held it"
    holder.stdin.close()  # the holder lets go and ends
    assert taken.wait(5), "the lock was not taken once the other process let it go"
    writer.join()
    assert holder.wait(5) == 0
    holder.stdout.close()
    this_process.close()


HOLD_THE_LOCK = """
import sys
from pathlib import Path
from gateway.sqlite_files import ProcessesWriteLock
lock = ProcessesWriteLock(Path(sys.argv[1]))
with lock:
    print("held", flush=True)
    sys.stdin.read()
"""
