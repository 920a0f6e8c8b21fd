"""A commit that waits for the next one's fsync must never leave the connection that way."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from gateway.errors import JournalError
from gateway.sqlite_files import connect_durable, transaction

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
