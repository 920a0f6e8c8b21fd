"""Studies across associations, for the stable-study events: the journal's side.

A view on the journal's connection (:mod:`ingest.journal_db`), like the outbox. When an
association of an AE title with a quiet time is announced, :func:`record_announced` copies its
instances into the study tables in the same transaction as the announcement, and moves the
study's due time to now plus the quiet time. The study watch (:mod:`ingest.study_watch`) asks
for the studies due (:meth:`Studies.due`), and puts each one's event in the outbox with
:meth:`Studies.put_event`, which bumps the revision in the same transaction, and only if
nothing was added since the event was built. A study is forgotten once it has been quiet for
``history_days`` (:meth:`Studies.forget_quiet`).

Only instances of announced associations are copied, so an aborted association never counts.
Instances whose Study Instance UID is not a valid UID belong to no study.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts.events import StoredInstance
from ingest.journal_db import AssociationState, JournalDb, timestamp
from ingest.outbox import OutboxEvent, insert_event

#: The tables holding studies, each keyed by (called AE title, study).
_STUDY_TABLES = ("study_instances", "study_associations", "studies")
#: States of an association whose instances may still join a study: not yet announced.
_IN_FLIGHT = (AssociationState.OPEN, AssociationState.RELEASING, AssociationState.RELEASED)


@dataclass(frozen=True)
class DueStudy:
    """A study whose quiet time is over, as the journal has it."""

    called_ae_title: str
    study_instance_uid: str
    pipeline: str
    #: A random name given when the study was first recorded: event ids derive from it.
    study_key: str
    stable_seconds: float
    #: When an association last added instances (the quiet time counts from here).
    changed_at: datetime
    #: Stable events put in the outbox so far.
    revision: int


@dataclass(frozen=True)
class StudySource:
    """An association that stored instances of the study, and how many are listed from it."""

    association_id: str
    calling_ae_title: str
    remote_host: str
    released_at: datetime
    instance_count: int


def record_announced(
    cursor: sqlite3.Cursor, association_id: str, stable_seconds: float, now: datetime
) -> None:
    """Within the announcement's transaction: the association's instances join their studies
    (the latest copy of an instance replaces an earlier one), and each study's quiet time
    starts again from ``now``."""
    due = timestamp(now + timedelta(seconds=stable_seconds))
    cursor.execute(
        "INSERT INTO studies (called_ae_title, study_instance_uid, pipeline, study_key,"
        " stable_seconds, changed_at, due_at)"
        " SELECT a.called_ae_title, s.study_instance_uid, a.pipeline,"
        " lower(hex(randomblob(16))), ?, ?, ?"
        " FROM (SELECT DISTINCT study_instance_uid FROM instances WHERE association_id = ?"
        " AND is_valid_uid(study_instance_uid)) s, associations a"
        " WHERE a.association_id = ?"
        " ON CONFLICT (called_ae_title, study_instance_uid) DO UPDATE SET"
        " pipeline = excluded.pipeline, stable_seconds = excluded.stable_seconds,"
        " changed_at = excluded.changed_at, due_at = excluded.due_at",
        (stable_seconds, timestamp(now), due, association_id, association_id),
    )
    cursor.execute(
        "INSERT OR REPLACE INTO study_instances (called_ae_title, study_instance_uid,"
        " sop_instance_uid, association_id, sop_class_uid, transfer_syntax_uid,"
        " series_instance_uid, object_key, size, sha256, malformed_reason, stored_at)"
        " SELECT a.called_ae_title, i.study_instance_uid, i.sop_instance_uid, i.association_id,"
        " i.sop_class_uid, i.transfer_syntax_uid, i.series_instance_uid, i.object_key, i.size,"
        " i.sha256, i.malformed_reason, ? FROM instances i JOIN associations a"
        " USING (association_id) WHERE i.association_id = ? AND is_valid_uid(i.study_instance_uid)"
        " ORDER BY i.received_seq",
        (timestamp(now), association_id),
    )
    cursor.execute(
        "INSERT OR REPLACE INTO study_associations (called_ae_title, study_instance_uid,"
        " association_id, calling_ae_title, remote_host, released_at)"
        " SELECT DISTINCT a.called_ae_title, i.study_instance_uid, a.association_id,"
        " a.calling_ae_title, a.remote_host, a.released_at"
        " FROM instances i JOIN associations a USING (association_id)"
        " WHERE i.association_id = ? AND is_valid_uid(i.study_instance_uid)",
        (association_id,),
    )


def forget_association(cursor: sqlite3.Cursor, association_id: str, now: datetime) -> None:
    """An operator dropped the association: its instances leave their studies, and a study that
    was announced with them is announced again without them after its quiet time."""
    studies = cursor.execute(
        "SELECT st.called_ae_title, st.study_instance_uid, st.stable_seconds FROM studies st"
        " JOIN study_associations s USING (called_ae_title, study_instance_uid)"
        " WHERE s.association_id = ?",
        (association_id,),
    ).fetchall()
    for called_ae_title, study_instance_uid, stable_seconds in studies:
        cursor.execute(
            "UPDATE studies SET changed_at = ?, due_at = ?"
            " WHERE called_ae_title = ? AND study_instance_uid = ?",
            (
                timestamp(now),
                timestamp(now + timedelta(seconds=stable_seconds)),
                called_ae_title,
                study_instance_uid,
            ),
        )
    cursor.execute("DELETE FROM study_instances WHERE association_id = ?", (association_id,))
    cursor.execute("DELETE FROM study_associations WHERE association_id = ?", (association_id,))


_FORGET_QUIET_INSTANCES = (
    "DELETE FROM study_instances WHERE (called_ae_title, study_instance_uid) IN"
    " (SELECT called_ae_title, study_instance_uid FROM studies"
    " WHERE due_at IS NULL AND changed_at < ?)"
)
_FORGET_QUIET_ASSOCIATIONS = (
    "DELETE FROM study_associations WHERE (called_ae_title, study_instance_uid) IN"
    " (SELECT called_ae_title, study_instance_uid FROM studies"
    " WHERE due_at IS NULL AND changed_at < ?)"
)


class Studies:
    """Thread-safe, as the :class:`~ingest.journal_db.JournalDb` it works on."""

    def __init__(self, db: JournalDb) -> None:
        self._db = db

    def due(self, now: datetime, limit: int) -> list[DueStudy]:
        """Studies whose quiet time is over, longest waiting first."""
        rows = self._db.read(
            "SELECT called_ae_title, study_instance_uid, pipeline, study_key, stable_seconds,"
            " changed_at, revision FROM studies WHERE due_at <= ? ORDER BY due_at LIMIT ?",
            (timestamp(now), limit),
        )
        return [
            DueStudy(row[0], row[1], row[2], row[3], row[4], datetime.fromisoformat(row[5]), row[6])
            for row in rows
        ]

    def postpone(self, study: DueStudy, until: datetime) -> None:
        """Look at the study again only from ``until`` (an association still adds to it), so
        that it does not keep its place among the due ones."""
        with self._db.write() as cur:
            cur.execute(
                "UPDATE studies SET due_at = ? WHERE called_ae_title = ?"
                " AND study_instance_uid = ? AND changed_at = ? AND due_at IS NOT NULL",
                (
                    timestamp(until),
                    study.called_ae_title,
                    study.study_instance_uid,
                    timestamp(study.changed_at),
                ),
            )

    def in_flight(self, study: DueStudy) -> bool:
        """Whether an association not announced yet holds instances of the study: the study is
        not quiet while one still arrives (or waits for its uploads)."""
        rows = self._db.read(
            "SELECT 1 FROM instances i JOIN associations a USING (association_id)"
            " WHERE i.study_instance_uid = ? AND a.called_ae_title = ? AND a.state IN (?, ?, ?)"
            " LIMIT 1",
            (study.study_instance_uid, study.called_ae_title, *_IN_FLIGHT),
        )
        return bool(rows)

    def sources(self, study: DueStudy) -> list[StudySource]:
        """The associations whose instances the study lists, oldest release first."""
        rows = self._db.read(
            "SELECT s.association_id, s.calling_ae_title, s.remote_host, s.released_at,"
            " COUNT(i.sop_instance_uid) FROM study_associations s JOIN study_instances i"
            " ON i.called_ae_title = s.called_ae_title"
            " AND i.study_instance_uid = s.study_instance_uid"
            " AND i.association_id = s.association_id"
            " WHERE s.called_ae_title = ? AND s.study_instance_uid = ?"
            " GROUP BY s.association_id ORDER BY s.released_at",
            (study.called_ae_title, study.study_instance_uid),
        )
        return [
            StudySource(row[0], row[1], row[2], datetime.fromisoformat(row[3]), row[4])
            for row in rows
        ]

    def instances(self, study: DueStudy, *, after: int = 0, limit: int = -1) -> list[Listed]:
        """A page of the study's instances in the order stored: at most ``limit`` (-1: all)
        after the position ``after``."""
        rows = self._db.read(
            "SELECT rowid, sop_instance_uid, sop_class_uid, transfer_syntax_uid,"
            " study_instance_uid, series_instance_uid, object_key, size, sha256,"
            " malformed_reason FROM study_instances"
            " WHERE called_ae_title = ? AND study_instance_uid = ?"
            " AND rowid > ? ORDER BY rowid LIMIT ?",
            (study.called_ae_title, study.study_instance_uid, after, limit),
        )
        return [
            Listed(
                row[0],
                StoredInstance(
                    sop_instance_uid=row[1],
                    sop_class_uid=row[2],
                    transfer_syntax_uid=row[3],
                    study_instance_uid=row[4],
                    # '' when the data set has none (an instance stored although malformed).
                    series_instance_uid=row[5] or None,
                    object_key=row[6],
                    size=row[7],
                    sha256=row[8],
                    well_formed=row[9] is None,
                    reason=row[9],
                ),
            )
            for row in rows
        ]

    def put_event(self, study: DueStudy, event: OutboxEvent, now: datetime) -> bool:
        """Put the study's next stable event in the outbox and count its revision, in one
        transaction; False (nothing done) if an association added instances since ``study``
        was read, so that the event would not list them."""
        with self._db.write() as cur:
            updated = cur.execute(
                "UPDATE studies SET revision = revision + 1, due_at = NULL"
                " WHERE called_ae_title = ? AND study_instance_uid = ? AND changed_at = ?"
                " AND revision = ?",
                (
                    study.called_ae_title,
                    study.study_instance_uid,
                    timestamp(study.changed_at),
                    study.revision,
                ),
            )
            if updated.rowcount != 1:
                return False
            insert_event(cur, event, now)
        return True

    def forget(self, study: DueStudy) -> None:
        """Forget a study left without instances (its associations were dropped)."""
        with self._db.write() as cur:
            cur.execute(
                "DELETE FROM studies WHERE called_ae_title = ? AND study_instance_uid = ?"
                " AND changed_at = ?",
                (study.called_ae_title, study.study_instance_uid, timestamp(study.changed_at)),
            )

    def forget_quiet(self, before: datetime) -> int:
        """Forget the studies announced and quiet since before ``before``; returns how many."""
        with self._db.write() as cur:
            cur.execute(_FORGET_QUIET_INSTANCES, (timestamp(before),))
            cur.execute(_FORGET_QUIET_ASSOCIATIONS, (timestamp(before),))
            cur.execute(
                "DELETE FROM studies WHERE due_at IS NULL AND changed_at < ?",
                (timestamp(before),),
            )
            return cur.rowcount

    def forget_unless_called(self, called_ae_titles: Collection[str]) -> int:
        """At start-up: forget the studies of AE titles that no longer have a quiet time (it
        was turned off, or the AE title removed), so that turning it on again starts afresh
        instead of continuing a list that missed what came meanwhile. Returns how many."""
        titles = tuple(called_ae_titles)
        marks = ", ".join("?" for _ in titles)
        with self._db.write() as cur:
            for table in _STUDY_TABLES:
                cur.execute(
                    f"DELETE FROM {table} WHERE called_ae_title NOT IN ({marks})",  # noqa: S608
                    titles,
                )
            return cur.rowcount

    def forget_stored_before(self, before: datetime) -> int:
        """Forget the instances stored before ``before`` (their objects have expired, with
        ``storage.retention_days``): no revision lists them. Returns how many."""
        with self._db.write() as cur:
            cur.execute("DELETE FROM study_instances WHERE stored_at < ?", (timestamp(before),))
            forgotten = cur.rowcount
            cur.execute(
                "DELETE FROM study_associations WHERE NOT EXISTS (SELECT 1 FROM study_instances"
                " i WHERE i.association_id = study_associations.association_id"
                " AND i.called_ae_title = study_associations.called_ae_title"
                " AND i.study_instance_uid = study_associations.study_instance_uid)"
            )
        return forgotten

    def pending_count(self) -> int:
        """Studies waiting for their quiet time (or for an association still arriving)."""
        ((count,),) = self._db.read("SELECT COUNT(*) FROM studies WHERE due_at IS NOT NULL")
        return int(count)


@dataclass(frozen=True)
class Listed:
    """One instance of a study's list, with its position in it (for the next page)."""

    position: int
    instance: StoredInstance
