"""The local journal: associations, their spooled instances and the event outbox, in SQLite.

It lives in the spool directory and is the single source of truth after a crash. Every change
that a DICOM answer or a later step depends on is committed before that answer is given
(WAL mode with ``synchronous=FULL``, so a commit is on disk when it returns).

Association states::

    open ──A-RELEASE-RQ──▶ releasing ──RP sent──▶ released ──all uploaded──▶ announced ──▶ (gone)
      └──────────────────────┴──aborted──▶ aborted ──files removed──▶ (gone)

``releasing`` is recorded before the A-RELEASE-RP goes out, so that a crash right after the
sender saw its release confirmed never loses the association. After a restart a ``releasing``
association counts as released: the sender may have its confirmation, and sending an
association twice is recoverable where losing it is not.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from gateway.errors import JournalError
from gateway.sqlite_files import connect_durable, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS associations (
    association_id   TEXT PRIMARY KEY,
    called_ae_title  TEXT NOT NULL,
    calling_ae_title TEXT NOT NULL,
    remote_host      TEXT NOT NULL,
    remote_port      INTEGER NOT NULL,
    pipeline         TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    state            TEXT NOT NULL,
    released_at      TEXT,
    cleanup_after    TEXT,
    owner            INTEGER
);
CREATE TABLE IF NOT EXISTS instances (
    association_id      TEXT NOT NULL REFERENCES associations(association_id),
    sop_instance_uid    TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    spool_name          TEXT NOT NULL,
    data_offset         INTEGER NOT NULL,
    data_length         INTEGER NOT NULL,
    received_seq        INTEGER NOT NULL,
    object_key          TEXT NOT NULL,
    size                INTEGER,
    sha256              TEXT,
    PRIMARY KEY (association_id, sop_instance_uid)
);
CREATE TABLE IF NOT EXISTS outbox (
    event_id       TEXT PRIMARY KEY,
    association_id TEXT NOT NULL,
    routing_key    TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    body           BLOB NOT NULL,
    created_at     TEXT NOT NULL,
    not_before     TEXT
);
"""


class AssociationState(StrEnum):
    OPEN = "open"
    RELEASING = "releasing"
    RELEASED = "released"
    ABORTED = "aborted"
    ANNOUNCED = "announced"
    FAILED = "failed"


@dataclass(frozen=True)
class AssociationRecord:
    association_id: str
    called_ae_title: str
    calling_ae_title: str
    remote_host: str
    remote_port: int
    pipeline: str
    started_at: datetime
    state: AssociationState = AssociationState.OPEN
    released_at: datetime | None = None


@dataclass(frozen=True)
class SpooledInstance:
    """An instance fsynced in the spool; ``size``/``sha256`` are set once it is in storage."""

    association_id: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    series_instance_uid: str
    spool_name: str
    data_offset: int
    data_length: int
    received_seq: int
    object_key: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class OutboxEvent:
    event_id: str
    association_id: str
    routing_key: str
    content_type: str
    body: bytes
    #: When the sender released the association (for the publish latency metric).
    released_at: datetime | None = None


@dataclass(frozen=True)
class StoredObject:
    """An instance now in object storage: its stored size and sha256."""

    association_id: str
    sop_instance_uid: str
    size: int
    sha256: str


@dataclass(frozen=True)
class EndedAssociation:
    association_id: str
    called_ae_title: str


@dataclass(frozen=True)
class OwnerEnded:
    """What became of the associations of a process that ended: see :meth:`Journal.end_owned`."""

    aborted: list[EndedAssociation]
    released: list[str]


#: States in which an association holds one of the ``max_associations`` places.
_HOLDING_A_PLACE = (AssociationState.OPEN, AssociationState.RELEASING)


class AssociationNotOpen(JournalError):
    """An instance arrived for an association that is no longer open (it was aborted)."""


def _add_owner_column(db: sqlite3.Connection) -> None:
    """Journals written before worker processes existed have no ``owner`` column."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(associations)")}
    if "owner" not in columns:
        db.execute("ALTER TABLE associations ADD COLUMN owner INTEGER")


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class Journal:
    """Thread-safe: one connection, one lock; every method is one transaction."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> Journal:
        try:
            db = connect_durable(path, _SCHEMA)
            _add_owner_column(db)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        return cls(db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(
        self, *, durable_with_next: bool = False
    ) -> AbstractContextManager[sqlite3.Cursor]:
        return transaction(
            self._db,
            self._lock,
            JournalError,
            "journal write failed",
            durable_with_next=durable_with_next,
        )

    # -- associations -------------------------------------------------------------------------

    def begin_association(self, record: AssociationRecord, *, limit: int) -> bool:
        """Record an admitted association, unless ``limit`` associations are open already.

        The count and the insert are one transaction, so several processes admitting at once
        never go over the limit together. The association belongs to this process (see
        :meth:`end_owned`). Returns False, recording nothing, when the limit is reached.

        Not fsynced on its own (as :meth:`add_instance`): the association only counts once
        its release is recorded, durably and with this row; after a crash before that, a
        spool directory without its row is removed at start-up.
        """
        with self._transaction(durable_with_next=True) as cur:
            (count,) = cur.execute(
                "SELECT COUNT(*) FROM associations WHERE state IN (?, ?)", _HOLDING_A_PLACE
            ).fetchone()
            if count >= limit:
                return False
            cur.execute(
                "INSERT INTO associations (association_id, called_ae_title, calling_ae_title,"
                " remote_host, remote_port, pipeline, started_at, state, owner)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.association_id,
                    record.called_ae_title,
                    record.calling_ae_title,
                    record.remote_host,
                    record.remote_port,
                    record.pipeline,
                    _ts(record.started_at),
                    AssociationState.OPEN,
                    os.getpid(),
                ),
            )
        return True

    def open_count(self) -> int:
        """Associations holding a place under the association limit, in every process."""
        with self._lock:
            try:
                (count,) = self._db.execute(
                    "SELECT COUNT(*) FROM associations WHERE state IN (?, ?)", _HOLDING_A_PLACE
                ).fetchone()
            except sqlite3.Error as exc:
                raise JournalError(f"journal read failed: {exc}") from exc
        return int(count)

    def mark_releasing(self, association_id: str, released_at: datetime) -> bool:
        """The sender asked to release: recorded before the answer goes out.

        False if the association is no longer open (aborted meanwhile by a restarted parent
        or by the settling of a dead worker's rows): its release must not be confirmed.
        """
        with self._transaction() as cur:
            updated = cur.execute(
                "UPDATE associations SET state = ?, released_at = ?"
                " WHERE association_id = ? AND state = ?",
                (
                    AssociationState.RELEASING,
                    _ts(released_at),
                    association_id,
                    AssociationState.OPEN,
                ),
            )
            recorded = updated.rowcount == 1  # read before the commit resets it
        return recorded

    def mark_released(self, association_id: str, released_at: datetime) -> None:
        """After the A-RELEASE-RP. Not fsynced on its own: lost in a crash, the association
        is ``releasing`` again, which a restart takes for released too."""
        with self._transaction(durable_with_next=True) as cur:
            cur.execute(
                "UPDATE associations SET state = ?, released_at = COALESCE(released_at, ?)"
                " WHERE association_id = ? AND state IN (?, ?)",
                (
                    AssociationState.RELEASED,
                    _ts(released_at),
                    association_id,
                    AssociationState.OPEN,
                    AssociationState.RELEASING,
                ),
            )

    def mark_aborted(self, association_id: str, cleanup_after: datetime) -> None:
        """Fsynced: a ``releasing`` association that then aborted would otherwise count as
        released after a crash, and be handed on."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE associations SET state = ?, cleanup_after = ?"
                " WHERE association_id = ? AND state IN (?, ?)",
                (
                    AssociationState.ABORTED,
                    _ts(cleanup_after),
                    association_id,
                    AssociationState.OPEN,
                    AssociationState.RELEASING,
                ),
            )

    def mark_failed(self, association_id: str) -> None:
        """Set aside: storing it failed for a reason retrying cannot fix (files are kept)."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE associations SET state = ? WHERE association_id = ?",
                (AssociationState.FAILED, association_id),
            )

    def abort_all_open(self, cleanup_after: datetime) -> list[str]:
        """After a crash no open association can continue: they count as aborted.

        A ``releasing`` association had its release requested and perhaps confirmed: it counts
        as released.
        """
        with self._transaction() as cur:
            cur.execute(
                "UPDATE associations SET state = ? WHERE state = ?",
                (AssociationState.RELEASED, AssociationState.RELEASING),
            )
            ids = [
                row[0]
                for row in cur.execute(
                    "SELECT association_id FROM associations WHERE state = ?",
                    (AssociationState.OPEN,),
                )
            ]
            cur.execute(
                "UPDATE associations SET state = ?, cleanup_after = ? WHERE state = ?",
                (AssociationState.ABORTED, _ts(cleanup_after), AssociationState.OPEN),
            )
        return ids

    def holding(self, owner: int) -> list[tuple[str, AssociationState]]:
        """The associations of process ``owner`` that hold a place (open or releasing)."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT association_id, state FROM associations"
                    " WHERE owner = ? AND state IN (?, ?)",
                    (owner, *_HOLDING_A_PLACE),
                ).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"journal read failed: {exc}") from exc
        return [(row[0], AssociationState(row[1])) for row in rows]

    def owners_holding(self) -> set[int]:
        """Every process that holds a place (rows from before owners were recorded: none)."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT DISTINCT owner FROM associations"
                    " WHERE owner IS NOT NULL AND state IN (?, ?)",
                    _HOLDING_A_PLACE,
                ).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"journal read failed: {exc}") from exc
        return {int(row[0]) for row in rows}

    def end_owned(self, owner: int, cleanup_after: datetime) -> OwnerEnded:
        """The process ``owner`` ended: its associations end as they would after a crash.

        ``releasing`` ones count as released, open ones as aborted (as in
        :meth:`abort_all_open`). Returns the aborted ones, and every released one of the owner
        (it may have ended before handing them on).
        """
        with self._transaction() as cur:
            cur.execute(
                "UPDATE associations SET state = ? WHERE owner = ? AND state = ?",
                (AssociationState.RELEASED, owner, AssociationState.RELEASING),
            )
            aborted = [
                EndedAssociation(row[0], row[1])
                for row in cur.execute(
                    "SELECT association_id, called_ae_title FROM associations"
                    " WHERE owner = ? AND state = ?",
                    (owner, AssociationState.OPEN),
                )
            ]
            cur.execute(
                "UPDATE associations SET state = ?, cleanup_after = ?"
                " WHERE owner = ? AND state = ?",
                (AssociationState.ABORTED, _ts(cleanup_after), owner, AssociationState.OPEN),
            )
            released = [
                row[0]
                for row in cur.execute(
                    "SELECT association_id FROM associations WHERE owner = ? AND state = ?",
                    (owner, AssociationState.RELEASED),
                )
            ]
        return OwnerEnded(aborted, released)

    def association(self, association_id: str) -> AssociationRecord:
        with self._lock:
            row = self._db.execute(
                "SELECT association_id, called_ae_title, calling_ae_title, remote_host,"
                " remote_port, pipeline, started_at, state, released_at"
                " FROM associations WHERE association_id = ?",
                (association_id,),
            ).fetchone()
        if row is None:
            raise JournalError(f"association {association_id} is not in the journal")
        return AssociationRecord(
            association_id=row[0],
            called_ae_title=row[1],
            calling_ae_title=row[2],
            remote_host=row[3],
            remote_port=row[4],
            pipeline=row[5],
            started_at=datetime.fromisoformat(row[6]),
            state=AssociationState(row[7]),
            released_at=None if row[8] is None else datetime.fromisoformat(row[8]),
        )

    def state(self, association_id: str) -> AssociationState | None:
        """The association's state, or None once it is forgotten (or was never known)."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT state FROM associations WHERE association_id = ?", (association_id,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise JournalError(f"journal read failed: {exc}") from exc
        return None if row is None else AssociationState(row[0])

    def associations_in_state(self, state: AssociationState) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT association_id FROM associations WHERE state = ? ORDER BY released_at",
                (state,),
            ).fetchall()
        return [row[0] for row in rows]

    def known_associations(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT association_id FROM associations").fetchall()
        return [row[0] for row in rows]

    def aborted_due(self, now: datetime) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT association_id FROM associations WHERE state = ? AND cleanup_after <= ?",
                (AssociationState.ABORTED, _ts(now)),
            ).fetchall()
        return [row[0] for row in rows]

    def forget(self, association_id: str) -> None:
        """Remove every trace of an association whose files are gone."""
        with self._transaction() as cur:
            cur.execute("DELETE FROM outbox WHERE association_id = ?", (association_id,))
            cur.execute("DELETE FROM instances WHERE association_id = ?", (association_id,))
            cur.execute("DELETE FROM associations WHERE association_id = ?", (association_id,))

    # -- instances ----------------------------------------------------------------------------

    def add_instance(self, instance: SpooledInstance) -> str | None:
        """Record an fsynced instance; returns the spool name of an instance it replaces.

        A sender may send the same SOP Instance UID twice in one association; the last copy
        wins, as it would in any archive, and the earlier file is the caller's to remove.

        The row is not fsynced on its own: it only counts once the association's release is
        recorded, and that commit's fsync makes every earlier row durable with it. A crash
        before then discards the association, row or not. (This saves one fsync per instance.)
        """
        with self._transaction(durable_with_next=True) as cur:
            state = cur.execute(
                "SELECT state FROM associations WHERE association_id = ?",
                (instance.association_id,),
            ).fetchone()
            if state is None or state[0] != AssociationState.OPEN:
                raise AssociationNotOpen(f"association {instance.association_id} is not open")
            previous = cur.execute(
                "SELECT spool_name FROM instances"
                " WHERE association_id = ? AND sop_instance_uid = ?",
                (instance.association_id, instance.sop_instance_uid),
            ).fetchone()
            cur.execute(
                "INSERT OR REPLACE INTO instances (association_id, sop_instance_uid,"
                " sop_class_uid, transfer_syntax_uid, study_instance_uid, series_instance_uid,"
                " spool_name, data_offset, data_length, received_seq, object_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    instance.association_id,
                    instance.sop_instance_uid,
                    instance.sop_class_uid,
                    instance.transfer_syntax_uid,
                    instance.study_instance_uid,
                    instance.series_instance_uid,
                    instance.spool_name,
                    instance.data_offset,
                    instance.data_length,
                    instance.received_seq,
                    instance.object_key,
                ),
            )
        return None if previous is None else str(previous[0])

    def instances(self, association_id: str) -> list[SpooledInstance]:
        """The association's instances in the order they were received."""
        with self._lock:
            rows = self._db.execute(
                "SELECT association_id, sop_instance_uid, sop_class_uid, transfer_syntax_uid,"
                " study_instance_uid, series_instance_uid, spool_name, data_offset, data_length,"
                " received_seq, object_key, size, sha256"
                " FROM instances WHERE association_id = ? ORDER BY received_seq",
                (association_id,),
            ).fetchall()
        return [SpooledInstance(*row) for row in rows]

    def mark_stored(self, stored: Sequence[StoredObject]) -> None:
        """Record uploaded instances, all in one transaction (one fsync for many uploads)."""
        with self._transaction() as cur:
            cur.executemany(
                "UPDATE instances SET size = ?, sha256 = ?"
                " WHERE association_id = ? AND sop_instance_uid = ?",
                [(s.size, s.sha256, s.association_id, s.sop_instance_uid) for s in stored],
            )

    # -- outbox -------------------------------------------------------------------------------

    def announce(self, event: OutboxEvent, created_at: datetime) -> None:
        """Put the association's event in the outbox; from now on it only needs relaying."""
        with self._transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO outbox (event_id, association_id, routing_key,"
                " content_type, body, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    event.association_id,
                    event.routing_key,
                    event.content_type,
                    event.body,
                    _ts(created_at),
                ),
            )
            cur.execute(
                "UPDATE associations SET state = ? WHERE association_id = ?",
                (AssociationState.ANNOUNCED, event.association_id),
            )

    def pending_events(self, now: datetime, limit: int = 100) -> list[OutboxEvent]:
        """Events to publish now, oldest first (deferred ones once their time has come)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT o.event_id, o.association_id, o.routing_key, o.content_type, o.body,"
                " a.released_at FROM outbox o LEFT JOIN associations a USING (association_id)"
                " WHERE o.not_before IS NULL OR o.not_before <= ? ORDER BY o.created_at LIMIT ?",
                (_ts(now), limit),
            ).fetchall()
        return [
            OutboxEvent(
                row[0],
                row[1],
                row[2],
                row[3],
                bytes(row[4]),
                datetime.fromisoformat(row[5]) if row[5] else None,
            )
            for row in rows
        ]

    def defer(self, event_id: str, until: datetime) -> None:
        with self._transaction() as cur:
            cur.execute(
                "UPDATE outbox SET not_before = ? WHERE event_id = ?", (_ts(until), event_id)
            )

    def outbox_depth(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(count)
