"""The local event log: the embedded event bus used when no RabbitMQ is configured.

One SQLite file (WAL, ``synchronous=FULL``) that several processes share: ingest appends its
association events, ``dicom-gateway send`` appends export requests, export appends completions,
``dicom-gateway events`` reads it. An append is durable when it returns, which is what a broker's
publisher confirm promises.

Subscribers get RabbitMQ's topic routing (:func:`contracts.routing.topic_matches`) and its
delivery states, kept per subscription in ``deliveries``:

    ready ──claim──▶ taken ──ack──▶ (gone)
      ▲                │
      └────requeue─────┤
                       └──dead-letter──▶ dead

A subscription starts at the beginning of the log, so requests appended before export first
started are still served. Work taken by a consumer that crashed is given back to ``ready`` when
the consumer starts again (RabbitMQ's redelivery of unacknowledged messages).

Events older than the retention period are pruned, except those a subscriber still has to
settle.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contracts.routing import topic_matches
from gateway.errors import BrokerUnavailable
from gateway.sqlite_files import connect_durable, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    content_type TEXT,
    headers      TEXT NOT NULL,
    body         BLOB NOT NULL,
    published_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    name    TEXT PRIMARY KEY,
    binding TEXT NOT NULL,
    cursor  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    subscription TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    not_before   REAL NOT NULL DEFAULT 0,
    reason       TEXT,
    PRIMARY KEY (subscription, seq)
);
"""

READY = "ready"
TAKEN = "taken"
DEAD = "dead"
#: Not delivery states of the table: what :meth:`EventLog.delivery_state` says of an event the
#: subscription has not looked at yet (or that does not exist), and of one it has settled or
#: that its binding does not match.
UNSEEN = "unseen"
SETTLED = "settled"

#: Pruning is cheap but not free: at most this often per process.
PRUNE_INTERVAL_SECONDS = 3600.0
#: New events a claim looks at in one go.
_SCAN_BATCH = 1000


@dataclass(frozen=True)
class LoggedEvent:
    seq: int
    message_id: str
    routing_key: str
    content_type: str | None
    body: bytes
    published_at: datetime
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryState:
    """One event's delivery to one subscription: READY, TAKEN, DEAD, UNSEEN or SETTLED, and how
    often it was handed out (a READY one handed out before was put back)."""

    state: str
    attempts: int


@dataclass(frozen=True)
class Claimed:
    """An event handed to a subscriber, with how often it has been handed out (1 = first)."""

    event: LoggedEvent
    attempts: int


class EventLog:
    """A handle on the log file; thread-safe (one connection behind a lock)."""

    def __init__(self, connection: sqlite3.Connection, retention: timedelta) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self._retention = retention
        self._pruned_at = -PRUNE_INTERVAL_SECONDS

    @classmethod
    def open(cls, path: Path, retention: timedelta = timedelta(days=30)) -> EventLog:
        try:
            db = connect_durable(path, _SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise BrokerUnavailable(f"cannot open the event log {path}: {exc}") from exc
        return cls(db, retention)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Cursor]:
        return transaction(self._db, self._lock, BrokerUnavailable, "event log")

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise BrokerUnavailable(f"event log: {exc}") from exc

    # -- publishing and reading -----------------------------------------------------------

    def append(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        content_type: str | None,
        headers: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one event; durable on return. Returns its sequence number."""
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO events (message_id, routing_key, content_type, headers, body,"
                " published_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    message_id,
                    routing_key,
                    content_type,
                    json.dumps(dict(headers or {}), default=str),
                    body,
                    datetime.now(UTC).isoformat(),
                ),
            )
            seq = cur.lastrowid
        if time.monotonic() - self._pruned_at > PRUNE_INTERVAL_SECONDS:
            self.prune(datetime.now(UTC) - self._retention)
        assert seq is not None
        return seq

    def read(self, after: int, limit: int = 500) -> list[LoggedEvent]:
        """Events with a sequence number above ``after``, oldest first."""
        rows = self._query(
            "SELECT seq, message_id, routing_key, content_type, headers, body, published_at"
            " FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [_event(row) for row in rows]

    def last_seq(self) -> int:
        (row,) = self._query("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(row[0])

    def prune(self, older_than: datetime) -> int:
        """Remove events published before ``older_than`` that no subscriber must still settle."""
        with self._transaction() as cur:
            cur.execute(
                "DELETE FROM events WHERE published_at < ? AND seq <="
                " (SELECT COALESCE(MIN(cursor), (SELECT MAX(seq) FROM events)) FROM subscriptions)"
                " AND seq NOT IN (SELECT seq FROM deliveries WHERE state != ?)",
                (older_than.isoformat(), DEAD),
            )
            removed = cur.rowcount
        self._pruned_at = time.monotonic()
        return removed

    # -- subscriptions --------------------------------------------------------------------

    def subscribe(self, name: str, binding: str) -> None:
        """Create the subscription (from the start of the log) or update its binding.

        What a consumer of ``name`` had taken and not settled is made ready again: only one
        consumer runs per subscription, so such work belongs to a consumer that stopped.
        """
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO subscriptions (name, binding, cursor) VALUES (?, ?, 0)"
                " ON CONFLICT(name) DO UPDATE SET binding = excluded.binding",
                (name, binding),
            )
            cur.execute(
                "UPDATE deliveries SET state = ? WHERE subscription = ? AND state = ?",
                (READY, name, TAKEN),
            )

    def claim(self, name: str, limit: int) -> list[Claimed]:
        """Take up to ``limit`` ready events of the subscription, oldest first."""
        now = time.time()
        with self._transaction() as cur:
            (binding, cursor) = cur.execute(
                "SELECT binding, cursor FROM subscriptions WHERE name = ?", (name,)
            ).fetchone()
            new = cur.execute(
                "SELECT seq, routing_key FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (cursor, _SCAN_BATCH),
            ).fetchall()
            cur.executemany(
                "INSERT OR IGNORE INTO deliveries (subscription, seq, state) VALUES (?, ?, ?)",
                [(name, seq, READY) for seq, key in new if topic_matches(binding, key)],
            )
            if new:
                cur.execute(
                    "UPDATE subscriptions SET cursor = ? WHERE name = ?", (new[-1][0], name)
                )
            rows = cur.execute(
                "SELECT e.seq, e.message_id, e.routing_key, e.content_type, e.headers, e.body,"
                " e.published_at, d.attempts FROM deliveries d JOIN events e ON e.seq = d.seq"
                " WHERE d.subscription = ? AND d.state = ? AND d.not_before <= ?"
                " ORDER BY d.seq LIMIT ?",
                (name, READY, now, limit),
            ).fetchall()
            cur.executemany(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1"
                " WHERE subscription = ? AND seq = ?",
                [(TAKEN, name, row[0]) for row in rows],
            )
        return [Claimed(_event(row[:7]), int(row[7]) + 1) for row in rows]

    def ack(self, name: str, seq: int) -> None:
        with self._transaction() as cur:
            cur.execute("DELETE FROM deliveries WHERE subscription = ? AND seq = ?", (name, seq))

    def requeue(self, name: str, seq: int, delay_seconds: float = 0.0) -> None:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE deliveries SET state = ?, not_before = ?"
                " WHERE subscription = ? AND seq = ?",
                (READY, time.time() + delay_seconds, name, seq),
            )

    def dead_letter(self, name: str, seq: int, reason: str) -> None:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE deliveries SET state = ?, reason = ? WHERE subscription = ? AND seq = ?",
                (DEAD, reason, name, seq),
            )

    def delivery_state(self, name: str, seq: int) -> DeliveryState:
        """Where event ``seq`` stands with subscription ``name`` (``send --wait`` asks)."""
        with self._lock:
            try:
                subscription = self._db.execute(
                    "SELECT cursor FROM subscriptions WHERE name = ?", (name,)
                ).fetchone()
                delivery = self._db.execute(
                    "SELECT state, attempts FROM deliveries WHERE subscription = ? AND seq = ?",
                    (name, seq),
                ).fetchone()
            except sqlite3.Error as exc:
                raise BrokerUnavailable(f"event log: {exc}") from exc
        if delivery is not None:
            return DeliveryState(str(delivery[0]), int(delivery[1]))
        if subscription is None or int(subscription[0]) < seq:
            return DeliveryState(UNSEEN, 0)
        return DeliveryState(SETTLED, 0)

    def dead_letters(self, name: str) -> list[tuple[LoggedEvent, str]]:
        """The subscription's dead-lettered events and why, oldest first."""
        rows = self._query(
            "SELECT e.seq, e.message_id, e.routing_key, e.content_type, e.headers, e.body,"
            " e.published_at, d.reason FROM deliveries d JOIN events e ON e.seq = d.seq"
            " WHERE d.subscription = ? AND d.state = ? ORDER BY d.seq",
            (name, DEAD),
        )
        return [(_event(row[:7]), str(row[7] or "")) for row in rows]


def _event(row: tuple[Any, ...]) -> LoggedEvent:
    seq, message_id, routing_key, content_type, headers, body, published_at = row
    return LoggedEvent(
        seq=int(seq),
        message_id=str(message_id),
        routing_key=str(routing_key),
        content_type=content_type,
        body=bytes(body),
        published_at=datetime.fromisoformat(published_at),
        headers=json.loads(headers),
    )
