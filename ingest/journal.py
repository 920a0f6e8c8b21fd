"""The local journal: associations and their spooled instances, in SQLite.

It lives in the spool directory and is the single source of truth after a crash. Every change
that a DICOM answer or a later step depends on is committed before that answer is given; which
writes wait for the disk, and why the others need not, is in :mod:`ingest.journal_db`. The
association's event waits in the outbox (:mod:`ingest.outbox`), and the worker process that
holds an association is its owner (:mod:`ingest.ownership`): both on the same connection,
reached as :attr:`Journal.outbox` and :attr:`Journal.ownership`.

Association states::

    open ──A-RELEASE-RQ──▶ releasing ──RP sent──▶ released ──all uploaded──▶ announced ──▶ (gone)
      └──────────────────────┴──aborted──▶ aborted ──files removed──▶ (gone)

Instances are uploaded while the association is still open (:mod:`ingest.uploader`); before the
first, :meth:`Journal.start_storing` durably marks it ``in_storage``, so that after an abort or
a crash its objects are found (by its key prefix) and deleted before its row goes.

``releasing`` is recorded before the A-RELEASE-RP goes out, and after a restart counts as
released: the sender may have its confirmation, and an association sent twice is recoverable
where a lost one is not.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from pathlib import Path

from gateway.errors import JournalError
from ingest.held import HeldAssociations
from ingest.journal_db import (
    HOLDING_A_PLACE,
    INSERT_INSTANCE,
    INSTANCES_QUERY,
    AssociationState,
    JournalDb,
    delete_association,
    holding_a_place,
    timestamp,
)
from ingest.outbox import Outbox
from ingest.ownership import Ownership
from ingest.policy import Limit, Limits
from ingest.studies import Studies


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
    #: The SHA-256 of the spool file when it is the object byte for byte (the fast path's);
    #: the upload then sends it as it is (ingest/object_upload.py).
    spool_sha256: str | None = None
    #: Why the instance is not well-formed, when it was stored as received all the same
    #: (``ingest.malformed_instances = "store"``); its study and series are then '' if the
    #: data set has no valid UID for them. The fields are the row's columns, in their order
    #: (``ingest.journal_db.INSERT_INSTANCE``).
    malformed_reason: str | None = None


@dataclass(frozen=True)
class StoredObject:
    """An instance now in object storage: its stored size and sha256.

    ``spool_name`` says which copy was uploaded: a later copy of the same SOP instance (sent
    twice in one association) is a row of its own, and is not stored by this upload.
    """

    association_id: str
    sop_instance_uid: str
    spool_name: str
    size: int
    sha256: str


class AssociationNotOpen(JournalError):
    """An instance arrived for an association that is no longer open (it was aborted)."""


class Journal:
    """Thread-safe: each method is one transaction, or one read, on the journal's connection."""

    def __init__(self, db: JournalDb) -> None:
        self._db = db
        #: The association's event, from announcement to the broker's confirm.
        self.outbox = Outbox(db)
        #: Which process holds which association, and what ends with a process.
        self.ownership = Ownership(db)
        #: What an operator sees and may change (ingest/association_commands.py).
        self.held = HeldAssociations(db)
        #: Studies across associations, for stable-study events (ingest/studies.py).
        self.studies = Studies(db)

    @classmethod
    def open(cls, path: Path) -> Journal:
        return cls(JournalDb.open(path))

    def close(self) -> None:
        self._db.close()

    # -- associations -------------------------------------------------------------------------

    def begin_association(self, record: AssociationRecord, limits: Limits) -> Limit | None:
        """Record an admitted association, unless one of ``limits`` is reached already.

        The counts and the insert are one transaction, so several processes admitting at once
        never go over a limit together. The association belongs to this process (see
        :meth:`Ownership.end_owned <ingest.ownership.Ownership.end_owned>`). Returns the limit
        reached, recording nothing, or None once recorded. Not fsynced on its own (as
        :meth:`add_instance`): a spool directory without its row is removed at start-up.
        """
        with self._db.write(durable_with_next=True) as cur:
            for limit, which, value in (
                (limits.total, Limit.TOTAL, None),
                (limits.per_calling_ae, Limit.CALLING_AE, record.calling_ae_title),
                (limits.per_address, Limit.ADDRESS, record.remote_host),
            ):
                if limit is not None and holding_a_place(cur, which, value) >= limit:
                    return which
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
                    timestamp(record.started_at),
                    AssociationState.OPEN,
                    os.getpid(),
                ),
            )
        return None

    def open_count(self) -> int:
        """Associations holding a place under the association limit, in every process."""
        ((count,),) = self._db.read(
            "SELECT COUNT(*) FROM associations WHERE state IN (?, ?)", HOLDING_A_PLACE
        )
        return int(count)

    def mark_releasing(self, association_id: str, released_at: datetime) -> bool:
        """The sender asked to release: recorded before the answer goes out.

        False if the association is no longer open (aborted meanwhile by a restarted parent
        or by the settling of a dead worker's rows): its release must not be confirmed.
        """
        with self._db.write() as cur:
            updated = cur.execute(
                "UPDATE associations SET state = ?, released_at = ?"
                " WHERE association_id = ? AND state = ?",
                (
                    AssociationState.RELEASING,
                    timestamp(released_at),
                    association_id,
                    AssociationState.OPEN,
                ),
            )
            recorded = updated.rowcount == 1  # read before the commit resets it
        return recorded

    def mark_released(self, association_id: str, released_at: datetime) -> None:
        """After the A-RELEASE-RP. Not fsynced on its own: lost in a crash, the association
        is ``releasing`` again, which a restart takes for released too."""
        with self._db.write(durable_with_next=True) as cur:
            cur.execute(
                "UPDATE associations SET state = ?, released_at = COALESCE(released_at, ?)"
                " WHERE association_id = ? AND state IN (?, ?)",
                (
                    AssociationState.RELEASED,
                    timestamp(released_at),
                    association_id,
                    AssociationState.OPEN,
                    AssociationState.RELEASING,
                ),
            )

    def mark_aborted(self, association_id: str, cleanup_after: datetime) -> bool:
        """Fsynced: a ``releasing`` association that then aborted would otherwise count as
        released after a crash, and be handed on. Returns whether objects of it may be in
        storage (then only the uploader may remove it: see :meth:`start_storing`)."""
        with self._db.write() as cur:
            cur.execute(
                "UPDATE associations SET state = ?, cleanup_after = ?"
                " WHERE association_id = ? AND state IN (?, ?)",
                (
                    AssociationState.ABORTED,
                    timestamp(cleanup_after),
                    association_id,
                    AssociationState.OPEN,
                    AssociationState.RELEASING,
                ),
            )
            row = cur.execute(
                "SELECT in_storage FROM associations WHERE association_id = ?", (association_id,)
            ).fetchone()
        return row is not None and bool(row[0])

    def start_storing(self, association_id: str) -> bool:
        """Before the association's first upload: record, fsynced, that objects of it may be in
        storage. The fsync also makes its admission and instance rows so far durable, so after
        a crash the association is known, and aborted with its objects.

        False when it is no longer open, releasing or released (aborted meanwhile): nothing
        of it may be uploaded then.
        """
        with self._db.write() as cur:
            updated = cur.execute(
                "UPDATE associations SET in_storage = 1 WHERE association_id = ? AND state IN"
                " (?, ?, ?)",
                (
                    association_id,
                    AssociationState.OPEN,
                    AssociationState.RELEASING,
                    AssociationState.RELEASED,
                ),
            )
            started = updated.rowcount == 1  # read before the commit resets it
        return started

    def in_storage(self, association_id: str) -> bool:
        """Whether objects of the association may be in storage (see :meth:`start_storing`)."""
        rows = self._db.read(
            "SELECT in_storage FROM associations WHERE association_id = ?", (association_id,)
        )
        return bool(rows and rows[0][0])

    def mark_failed(self, association_id: str) -> None:
        """Set aside: storing it failed for a reason retrying cannot fix (files are kept)."""
        with self._db.write() as cur:
            cur.execute(
                "UPDATE associations SET state = ? WHERE association_id = ?",
                (AssociationState.FAILED, association_id),
            )

    def abort_all_open(self, cleanup_after: datetime) -> list[str]:
        """After a crash no open association can continue: they count as aborted.

        A ``releasing`` association had its release requested and perhaps confirmed: it counts
        as released.
        """
        with self._db.write() as cur:
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
                (AssociationState.ABORTED, timestamp(cleanup_after), AssociationState.OPEN),
            )
        return ids

    def association(self, association_id: str) -> AssociationRecord:
        rows = self._db.read(
            "SELECT association_id, called_ae_title, calling_ae_title, remote_host,"
            " remote_port, pipeline, started_at, state, released_at"
            " FROM associations WHERE association_id = ?",
            (association_id,),
        )
        if not rows:
            raise JournalError(f"association {association_id} is not in the journal")
        (row,) = rows
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
        rows = self._db.read(
            "SELECT state FROM associations WHERE association_id = ?", (association_id,)
        )
        return AssociationState(rows[0][0]) if rows else None

    def associations_in_state(self, state: AssociationState) -> list[str]:
        rows = self._db.read(
            "SELECT association_id FROM associations WHERE state = ? ORDER BY released_at",
            (state,),
        )
        return [row[0] for row in rows]

    def known_associations(self) -> list[str]:
        return [row[0] for row in self._db.read("SELECT association_id FROM associations")]

    def aborted_due(self, now: datetime) -> list[str]:
        rows = self._db.read(
            "SELECT association_id FROM associations WHERE state = ? AND cleanup_after <= ?",
            (AssociationState.ABORTED, timestamp(now)),
        )
        return [row[0] for row in rows]

    def forget(self, association_id: str) -> None:
        """Remove every trace of an association whose files are gone."""
        with self._db.write() as cur:
            delete_association(cur, association_id)

    # -- instances ----------------------------------------------------------------------------

    def add_instance(self, instance: SpooledInstance) -> str | None:
        """Record an fsynced instance; returns the spool name of an instance it replaces.

        A sender may send the same SOP Instance UID twice in one association; the last copy
        wins, as it would in any archive, and the earlier file is the caller's to remove.

        The row is not fsynced on its own: it only counts once the association's release is
        recorded, and that commit's fsync makes every earlier row durable with it. A crash
        before then discards the association, row or not. (This saves one fsync per instance.)
        """
        with self._db.write(durable_with_next=True) as cur:
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
            cur.execute(INSERT_INSTANCE, astuple(instance))
        return None if previous is None else str(previous[0])

    def instances(
        self, association_id: str, *, unstored: bool = False, after: int = -1, limit: int = -1
    ) -> list[SpooledInstance]:
        """The association's instances in the order they were received; with ``unstored``,
        only those not in storage yet (read as each instance arrives: only a few rows). A page:
        at most ``limit`` (-1: all) received after ``received_seq`` ``after``."""
        rows = self._db.read(INSTANCES_QUERY[unstored], (association_id, after, limit))
        return [SpooledInstance(*row) for row in rows]

    def mark_stored(self, stored: Sequence[StoredObject]) -> None:
        """Record uploaded instances, all in one transaction, without waiting for the disk
        while the receivers wait for the lock (why that is safe: :mod:`ingest.journal_db`)."""
        with self._db.write(durable_with_next=True) as cur:
            cur.executemany(
                "UPDATE instances SET size = ?, sha256 = ?"
                " WHERE association_id = ? AND sop_instance_uid = ? AND spool_name = ?",
                [
                    (s.size, s.sha256, s.association_id, s.sop_instance_uid, s.spool_name)
                    for s in stored
                ],
            )
