"""The event outbox: an association's event (or a study's), from its announcement to the
broker's confirm.

The uploader puts the event in once every instance is in object storage (:meth:`Outbox.announce`),
and the relay (:mod:`ingest.relay`) publishes it with confirms, then removes the association
(:meth:`Outbox.published`). The outbox is a table of the journal, written on the journal's
connection (:mod:`ingest.journal_db`): announcing is one fsynced transaction with the
association's change to ``announced``, so an event is never lost and never put in twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from ingest.journal_db import AssociationState, JournalDb, delete_association, timestamp

#: Events read from the outbox at a time; the relay reads again when it has sent them.
PENDING_BATCH = 100
#: Refusals of one event in a row after which it is set aside. The broker refuses a message
#: (negative confirm) for what it is, typically its size or a queue's overflow rule, so a few
#: quick attempts tell a lasting refusal from a passing one.
REFUSALS_BEFORE_SET_ASIDE = 3
#: Wait before offering a refused event again, by refusals so far.
REFUSAL_RETRY_SECONDS = (1.0, 4.0)
#: A set-aside event is still offered again this often (its cause may pass, e.g. a full queue).
SET_ASIDE_RETRY_SECONDS = 3600.0


class EventKind(StrEnum):
    """What an event announces, and so what its confirm ends."""

    #: A released association: once confirmed, the association is forgotten.
    ASSOCIATION = "association"
    #: A stable study (ingest/studies.py): once confirmed, only the event goes.
    STUDY = "study"


@dataclass(frozen=True)
class OutboxEvent:
    event_id: str
    #: The association announced; a study event's own id (it forgets no association).
    association_id: str
    routing_key: str
    content_type: str
    body: bytes
    #: When the sender released the association (for the publish latency metric).
    released_at: datetime | None = None
    kind: EventKind = EventKind.ASSOCIATION


def insert_event(cursor: sqlite3.Cursor, event: OutboxEvent, created_at: datetime) -> None:
    """Put ``event`` in the outbox within the caller's transaction (the same id again replaces
    it: a crash before the confirm builds the same event again)."""
    cursor.execute(
        "INSERT OR REPLACE INTO outbox (event_id, association_id, routing_key,"
        " content_type, body, created_at, kind) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            event.event_id,
            event.association_id,
            event.routing_key,
            event.content_type,
            event.body,
            timestamp(created_at),
            event.kind,
        ),
    )


class Outbox:
    """Thread-safe, as the :class:`~ingest.journal_db.JournalDb` it works on."""

    def __init__(self, db: JournalDb) -> None:
        self._db = db

    def announce(
        self,
        event: OutboxEvent,
        created_at: datetime,
        *,
        also: Callable[[sqlite3.Cursor], None] | None = None,
    ) -> None:
        """Put the association's event in the outbox; from now on it only needs relaying.
        ``also``: more that must happen with it, in the same transaction (its studies)."""
        with self._db.write() as cur:
            insert_event(cur, event, created_at)
            cur.execute(
                "UPDATE associations SET state = ? WHERE association_id = ?",
                (AssociationState.ANNOUNCED, event.association_id),
            )
            if also is not None:
                also(cur)

    def pending(self, now: datetime) -> list[OutboxEvent]:
        """Events to publish now, oldest first (deferred ones once their time has come)."""
        rows = self._db.read(
            "SELECT o.event_id, o.association_id, o.routing_key, o.content_type, o.body,"
            " a.released_at, o.kind FROM outbox o LEFT JOIN associations a USING (association_id)"
            " WHERE o.not_before IS NULL OR o.not_before <= ? ORDER BY o.created_at LIMIT ?",
            (timestamp(now), PENDING_BATCH),
        )
        return [
            OutboxEvent(
                row[0],
                row[1],
                row[2],
                row[3],
                bytes(row[4]),
                datetime.fromisoformat(row[5]) if row[5] else None,
                EventKind(row[6]),
            )
            for row in rows
        ]

    def defer(self, event_id: str, until: datetime) -> None:
        """Offer the event again only from ``until`` on."""
        with self._db.write() as cur:
            cur.execute(
                "UPDATE outbox SET not_before = ? WHERE event_id = ?", (timestamp(until), event_id)
            )

    def refused(self, event_id: str, reason: str, now: datetime) -> int:
        """The broker refused the event once more; returns how many times in a row.

        It is offered again after a backoff; from :data:`REFUSALS_BEFORE_SET_ASIDE` refusals on
        it is set aside (``reason`` kept) and offered again only hourly and at each start, so
        that it no longer holds anything up.
        """
        with self._db.write() as cur:
            row = cur.execute(
                "UPDATE outbox SET refusals = refusals + 1 WHERE event_id = ? RETURNING refusals",
                (event_id,),
            ).fetchone()
            if row is None:
                return 0  # published meanwhile (by a drain at shutdown)
            refusals = int(row[0])
            set_aside = refusals >= REFUSALS_BEFORE_SET_ASIDE
            delay = (
                SET_ASIDE_RETRY_SECONDS
                if set_aside
                else REFUSAL_RETRY_SECONDS[min(refusals, len(REFUSAL_RETRY_SECONDS)) - 1]
            )
            cur.execute(
                "UPDATE outbox SET not_before = ?, set_aside = ? WHERE event_id = ?",
                (
                    timestamp(now + timedelta(seconds=delay)),
                    reason if set_aside else None,
                    event_id,
                ),
            )
        return refusals

    def offer_set_aside_again(self) -> int:
        """At start-up: set-aside events get a fresh series of attempts (the operator may have
        fixed the cause). Returns how many."""
        with self._db.write() as cur:
            cur.execute(
                "UPDATE outbox SET refusals = 0, set_aside = NULL, not_before = NULL"
                " WHERE set_aside IS NOT NULL"
            )
            return cur.rowcount

    def set_aside_count(self) -> int:
        """Events set aside after repeated refusals."""
        ((count,),) = self._db.read("SELECT COUNT(*) FROM outbox WHERE set_aside IS NOT NULL")
        return int(count)

    def published(self, event: OutboxEvent) -> None:
        """The broker confirmed ``event``: its association is done, and every trace of it goes
        (of a study event, only the event: the study is kept for its next revision).

        A crash before this commit publishes the same event id again on the next start.
        """
        with self._db.write() as cur:
            if event.kind is EventKind.STUDY:
                cur.execute("DELETE FROM outbox WHERE event_id = ?", (event.event_id,))
                return
            # Kept for an operator to publish again (reannounce), until history_days.
            cur.execute(
                "INSERT OR REPLACE INTO published_events (event_id, association_id, routing_key,"
                " content_type, body, published_at) SELECT event_id, association_id, routing_key,"
                " content_type, body, ? FROM outbox WHERE event_id = ?",
                (timestamp(datetime.now(UTC)), event.event_id),
            )
            delete_association(cur, event.association_id)

    def reannounce(self, association_id: str, now: datetime) -> str | None:
        """Put a published association event back in the outbox, same id and body (consumers
        deduplicate); returns its routing key, or None if it is not remembered."""
        with self._db.write() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO outbox (event_id, association_id, routing_key,"
                " content_type, body, created_at, kind) SELECT event_id, association_id,"
                " routing_key, content_type, body, ?, ? FROM published_events"
                " WHERE association_id = ?",
                (timestamp(now), EventKind.ASSOCIATION, association_id),
            )
            row = cur.execute(
                "SELECT routing_key FROM published_events WHERE association_id = ?",
                (association_id,),
            ).fetchone()
        return None if row is None else str(row[0])

    def forget_published(self, before: datetime) -> int:
        """Forget the events published before ``before``; returns how many."""
        with self._db.write() as cur:
            cur.execute("DELETE FROM published_events WHERE published_at < ?", (timestamp(before),))
            return cur.rowcount

    def depth(self) -> int:
        """Events waiting to be published (deferred ones included)."""
        ((count,),) = self._db.read("SELECT COUNT(*) FROM outbox")
        return int(count)
