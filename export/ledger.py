"""Completed exports, in SQLite: the idempotency record behind ``export_id``.

A completion is recorded *before* it is published and the request acknowledged, so a crash
anywhere after sending leads to the same completion being published again, never to the
instances being sent twice.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

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
                " finished_at TEXT NOT NULL, request_sha256 TEXT)",
            )
            columns = {row[1] for row in db.execute("PRAGMA table_info(completed)")}
            if "request_sha256" not in columns:  # a ledger of an earlier version
                db.execute("ALTER TABLE completed ADD COLUMN request_sha256 TEXT")
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open the export ledger {path}: {exc}") from exc
        return cls(db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def completion(self, export_id: str) -> RecordedCompletion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT export_id, routing_key, event_id, body, request_sha256, finished_at"
                " FROM completed WHERE export_id = ?",
                (export_id,),
            ).fetchone()
        if row is None:
            return None
        return RecordedCompletion(
            row[0], row[1], row[2], bytes(row[3]), row[4], datetime.fromisoformat(row[5])
        )

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
