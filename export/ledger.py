"""Completed exports, in SQLite: the idempotency record behind ``export_id``.

A completion is recorded *before* it is published and the request acknowledged, so a crash
anywhere after sending leads to the same completion being published again, never to the
instances being sent twice. A completion RabbitMQ returned as unroutable (no queue bound to
its routing key yet) is marked so, and offered again until one is (export/unrouted.py).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.errors import JournalError
from gateway.sqlite_files import connect_durable


@dataclass(frozen=True)
class RecordedCompletion:
    export_id: str
    routing_key: str
    event_id: str
    body: bytes
    #: :func:`export.idempotency.request_digest` of the request it completes (None in rows
    #: recorded before it was kept: any request with that export_id counts as the same).
    request_sha256: str | None = None
    #: When the export finished; set on what :meth:`Ledger.completion` returns.
    finished_at: datetime | None = None


_SELECT = (
    "SELECT export_id, routing_key, event_id, body, request_sha256, finished_at FROM completed"
)


def _completion(row: tuple[Any, ...]) -> RecordedCompletion:
    """A row of :data:`_SELECT`."""
    return RecordedCompletion(
        row[0], row[1], row[2], bytes(row[3]), row[4], datetime.fromisoformat(row[5])
    )


class Ledger:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> Ledger:
        try:
            db = connect_durable(
                path,
                "CREATE TABLE IF NOT EXISTS completed (export_id TEXT PRIMARY KEY,"
                " routing_key TEXT NOT NULL, event_id TEXT NOT NULL, body BLOB NOT NULL,"
                " finished_at TEXT NOT NULL, request_sha256 TEXT,"
                " unrouted INTEGER NOT NULL DEFAULT 0)",
            )
            # A ledger of an earlier version lacks the columns added since.
            columns = {row[1] for row in db.execute("PRAGMA table_info(completed)")}
            if "request_sha256" not in columns:
                db.execute("ALTER TABLE completed ADD COLUMN request_sha256 TEXT")
            if "unrouted" not in columns:
                db.execute("ALTER TABLE completed ADD COLUMN unrouted INTEGER NOT NULL DEFAULT 0")
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open the export ledger {path}: {exc}") from exc
        return cls(db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def completion(self, export_id: str) -> RecordedCompletion | None:
        with self._lock:
            row = self._db.execute(_SELECT + " WHERE export_id = ?", (export_id,)).fetchone()
        return None if row is None else _completion(row)

    def mark_unrouted(self, export_id: str, unrouted: bool) -> None:
        """Whether the completion of ``export_id`` still waits for a queue to take it."""
        try:
            with self._lock:
                self._db.execute(
                    "UPDATE completed SET unrouted = ? WHERE export_id = ?",
                    (int(unrouted), export_id),
                )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot record export {export_id}: {exc}") from exc

    def unrouted(self) -> list[RecordedCompletion]:
        """The completions waiting for a queue to take them, oldest first."""
        try:
            with self._lock:
                rows = self._db.execute(
                    _SELECT + " WHERE unrouted = 1 ORDER BY finished_at"
                ).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the export ledger: {exc}") from exc
        return [_completion(row) for row in rows]

    def record(self, completion: RecordedCompletion, finished_at: datetime) -> None:
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR IGNORE INTO completed (export_id, routing_key, event_id, body,"
                    " finished_at, request_sha256) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        completion.export_id,
                        completion.routing_key,
                        completion.event_id,
                        completion.body,
                        finished_at.isoformat(),
                        completion.request_sha256,
                    ),
                )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot record export {completion.export_id}: {exc}") from exc
