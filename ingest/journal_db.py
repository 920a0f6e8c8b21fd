"""The journal's SQLite file: its tables, the one connection to it and how it is written.

The association lifecycle (:mod:`ingest.journal`), the event outbox (:mod:`ingest.outbox`)
and worker ownership (:mod:`ingest.ownership`) are views on one :class:`JournalDb`: one
connection behind one lock, so that a change spanning them (an event put in the outbox and its
association marked announced) is one transaction, and the durability rules below hold for all.

Every write is one ``BEGIN IMMEDIATE`` transaction (WAL mode with ``synchronous=FULL``: a commit
is on disk when it returns), so a DICOM answer or later step given after it can rely on it.
Four kinds of record are committed without waiting for the disk (``durable_with_next``), as
they only count once a later, fsynced record exists: the admission of an association, its
instance rows, and the release after the A-RELEASE-RP. The write-ahead log is appended in
order, so the fsynced release request (or any later fsynced commit) makes them durable too;
a crash before it discards the association, rows or not. The fourth, the record that an
instance is in storage, only spares a repeated upload: the announcement's fsynced commit
makes it durable, and a crash before that repeats the upload of the same bytes.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from contracts.keys import is_valid_uid
from gateway.errors import JournalError
from gateway.sqlite_files import ProcessesWriteLock, connect_durable, transaction

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
    owner            INTEGER,
    in_storage       INTEGER NOT NULL DEFAULT 0
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
    spool_sha256        TEXT,
    malformed_reason    TEXT,
    PRIMARY KEY (association_id, sop_instance_uid)
);
-- The uploader reads an association's instances in arrival order, and those not stored yet
-- as each one arrives: without these, each read sorted or scanned every row of the
-- association (2.7 ms at 10,000 instances, per instance received).
CREATE INDEX IF NOT EXISTS instances_by_arrival ON instances (association_id, received_seq);
CREATE INDEX IF NOT EXISTS instances_unstored ON instances (association_id, received_seq)
    WHERE sha256 IS NULL;
-- Whether an association not announced yet adds to a study (ingest/studies.py): without it,
-- a scan of every instance row, under the journal's lock, for each study waiting.
CREATE INDEX IF NOT EXISTS instances_by_study ON instances (study_instance_uid);
CREATE TABLE IF NOT EXISTS outbox (
    event_id       TEXT PRIMARY KEY,
    association_id TEXT NOT NULL,
    routing_key    TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    body           BLOB NOT NULL,
    created_at     TEXT NOT NULL,
    not_before     TEXT,
    refusals       INTEGER NOT NULL DEFAULT 0,
    set_aside      TEXT,
    kind           TEXT NOT NULL DEFAULT 'association'
);
-- Association events after their confirm, kept ingest.history_days for operators to publish
-- again (dicom-gateway associations reannounce).
CREATE TABLE IF NOT EXISTS published_events (
    event_id       TEXT PRIMARY KEY,
    association_id TEXT NOT NULL,
    routing_key    TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    body           BLOB NOT NULL,
    published_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS published_events_by_time ON published_events (published_at);
-- Studies of AE titles with a quiet time (ingest/studies.py): what each holds across
-- associations, kept past the associations' own rows for the study's next revision.
CREATE TABLE IF NOT EXISTS studies (
    called_ae_title    TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    pipeline           TEXT NOT NULL,
    study_key          TEXT NOT NULL,
    stable_seconds     REAL NOT NULL,
    changed_at         TEXT NOT NULL,
    due_at             TEXT,
    revision           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (called_ae_title, study_instance_uid)
);
CREATE INDEX IF NOT EXISTS studies_due ON studies (due_at) WHERE due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS study_instances (
    called_ae_title     TEXT NOT NULL,
    study_instance_uid  TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL,
    association_id      TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    object_key          TEXT NOT NULL,
    size                INTEGER NOT NULL,
    sha256              TEXT NOT NULL,
    malformed_reason    TEXT,
    stored_at           TEXT NOT NULL,
    PRIMARY KEY (called_ae_title, study_instance_uid, sop_instance_uid)
);
-- A study's instances in the order stored: the rowid, which this index keeps in order.
CREATE INDEX IF NOT EXISTS study_instances_in_order
    ON study_instances (called_ae_title, study_instance_uid);
CREATE INDEX IF NOT EXISTS study_instances_by_time ON study_instances (stored_at);
CREATE TABLE IF NOT EXISTS study_associations (
    called_ae_title    TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    association_id     TEXT NOT NULL,
    calling_ae_title   TEXT NOT NULL,
    remote_host        TEXT NOT NULL,
    released_at        TEXT NOT NULL,
    PRIMARY KEY (called_ae_title, study_instance_uid, association_id)
);
"""


#: One instance row (a SOP Instance UID received again replaces its row); its columns, as
#: ``_SELECT_INSTANCES`` reads them too, in the order of ``ingest.journal.SpooledInstance``'s
#: fields.
INSERT_INSTANCE = (
    "INSERT OR REPLACE INTO instances (association_id, sop_instance_uid, sop_class_uid,"
    " transfer_syntax_uid, study_instance_uid, series_instance_uid, spool_name, data_offset,"
    " data_length, received_seq, object_key, size, sha256, spool_sha256, malformed_reason)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_INSTANCES = (
    "SELECT association_id, sop_instance_uid, sop_class_uid, transfer_syntax_uid,"
    " study_instance_uid, series_instance_uid, spool_name, data_offset, data_length,"
    " received_seq, object_key, size, sha256, spool_sha256, malformed_reason FROM instances"
    " WHERE association_id = ? AND received_seq > ?"
)
#: The instances of an association after a ``received_seq``, in arrival order, at most a
#: number of them; ``[True]``: only those not stored yet. Two statements, so that that one can
#: use its partial index (``_SCHEMA``).
INSTANCES_QUERY = {
    False: _SELECT_INSTANCES + " ORDER BY received_seq LIMIT ?",
    True: _SELECT_INSTANCES + " AND sha256 IS NULL ORDER BY received_seq LIMIT ?",
}


class AssociationState(StrEnum):
    """Where an association is in its lifecycle (see :mod:`ingest.journal`)."""

    OPEN = "open"
    RELEASING = "releasing"
    RELEASED = "released"
    ABORTED = "aborted"
    ANNOUNCED = "announced"
    FAILED = "failed"


#: States in which an association holds one of the ``max_associations`` places.
HOLDING_A_PLACE = (AssociationState.OPEN, AssociationState.RELEASING)


def timestamp(value: datetime | None) -> str | None:
    """How a time is stored: ISO 8601 text, which sorts and compares in SQL as times do."""
    return None if value is None else value.isoformat()


#: Columns added since the first version: (table, column, declaration). Journals written by
#: earlier versions get them on opening: ``owner`` (worker processes), ``in_storage`` (uploads
#: while the association is open), ``spool_sha256`` (one hash per instance), ``refusals`` and
#: ``set_aside`` (events the broker refuses), ``kind`` (stable-study events),
#: ``malformed_reason`` (an instance stored as received although not well-formed: why; its
#: study and series columns are then '' when the data set has no valid UID for them).
_LATER_COLUMNS = (
    ("associations", "owner", "INTEGER"),
    ("associations", "in_storage", "INTEGER NOT NULL DEFAULT 0"),
    ("instances", "spool_sha256", "TEXT"),
    ("outbox", "refusals", "INTEGER NOT NULL DEFAULT 0"),
    ("outbox", "set_aside", "TEXT"),
    ("outbox", "kind", "TEXT NOT NULL DEFAULT 'association'"),
    ("instances", "malformed_reason", "TEXT"),
)


def _add_later_columns(db: sqlite3.Connection) -> None:
    """Each missing column of :data:`_LATER_COLUMNS`, one by one (a crash in between leaves
    the rest for the next start); the caller holds the write lock of every process."""
    for table, column, declaration in _LATER_COLUMNS:
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


class JournalDb:
    """Thread-safe: one connection, one lock; every write is one transaction."""

    def __init__(self, connection: sqlite3.Connection, write_lock: ProcessesWriteLock) -> None:
        self._db = connection
        # Worker processes write the journal too (ingest/workers), each instance they receive.
        self._write_lock = write_lock
        self._lock = write_lock.threads

    @classmethod
    def open(cls, path: Path) -> JournalDb:
        try:
            db = connect_durable(path, _SCHEMA)
            # Which instances can belong to a study (ingest/studies.py) is the contract's rule.
            db.create_function("is_valid_uid", 1, is_valid_uid, deterministic=True)
            write_lock = ProcessesWriteLock(path)
            with write_lock:  # worker processes open the journal too
                _add_later_columns(db)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        return cls(db, write_lock)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._write_lock.close()

    def write(self, *, durable_with_next: bool = False) -> AbstractContextManager[sqlite3.Cursor]:
        """One write transaction; ``durable_with_next``: see the module's docstring."""
        return transaction(
            self._db,
            self._write_lock,
            JournalError,
            "journal write failed",
            durable_with_next=durable_with_next,
        )

    def read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        """Every row of one query; raises :class:`JournalError`."""
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"journal read failed: {exc}") from exc


_HOLDING_A_PLACE = "SELECT COUNT(*) FROM associations WHERE state IN (?, ?)"
_HOLDING_A_PLACE_FROM = {
    "total": _HOLDING_A_PLACE,
    "calling_ae_title": _HOLDING_A_PLACE + " AND calling_ae_title = ?",
    "remote_host": _HOLDING_A_PLACE + " AND remote_host = ?",
}


def holding_a_place(cursor: sqlite3.Cursor, counted: str, value: str | None) -> int:
    """Associations holding a place under the association limits: all of them (``counted``
    "total"), or those whose column ``counted`` is ``value`` (see ``ingest.policy.Limit``)."""
    parameters = HOLDING_A_PLACE + (() if value is None else (value,))
    (count,) = cursor.execute(_HOLDING_A_PLACE_FROM[counted], parameters).fetchone()
    return int(count)


def delete_association(cursor: sqlite3.Cursor, association_id: str) -> None:
    """Remove every trace of an association: its event, its instances, its row."""
    cursor.execute("DELETE FROM outbox WHERE association_id = ?", (association_id,))
    cursor.execute("DELETE FROM instances WHERE association_id = ?", (association_id,))
    cursor.execute("DELETE FROM associations WHERE association_id = ?", (association_id,))
