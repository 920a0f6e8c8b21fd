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
                " finished_at TEXT NOT NULL)",
            )
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open the export ledger {path}: {exc}") from exc
        return cls(db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def completion(self, export_id: str) -> RecordedCompletion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT export_id, routing_key, event_id, body FROM completed WHERE export_id = ?",
                (export_id,),
            ).fetchone()
        return None if row is None else RecordedCompletion(row[0], row[1], row[2], bytes(row[3]))

    def record(self, completion: RecordedCompletion, finished_at: datetime) -> None:
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR IGNORE INTO completed (export_id, routing_key, event_id, body,"
                    " finished_at) VALUES (?, ?, ?, ?, ?)",
                    (
                        completion.export_id,
                        completion.routing_key,
                        completion.event_id,
                        completion.body,
                        finished_at.isoformat(),
                    ),
                )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot record export {completion.export_id}: {exc}") from exc
