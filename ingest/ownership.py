"""Which process holds which association, and what becomes of them when it ends.

An association belongs to the process that admitted it (its ``owner``, recorded by
:meth:`~ingest.journal.Journal.begin_association`): with worker processes
(:mod:`ingest.workers`), the parent settles the associations of a worker that ended, and each
process settles its own rows whose association is gone (:func:`ingest.scp.reconcile`). Works on
the journal's connection (:mod:`ingest.journal_db`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ingest.journal_db import HOLDING_A_PLACE, AssociationState, JournalDb, timestamp


@dataclass(frozen=True)
class EndedAssociation:
    association_id: str
    called_ae_title: str


@dataclass(frozen=True)
class OwnerEnded:
    """What became of the associations of a process that ended: see :meth:`Ownership.end_owned`."""

    aborted: list[EndedAssociation]
    released: list[str]


class Ownership:
    """Thread-safe, as the :class:`~ingest.journal_db.JournalDb` it works on."""

    def __init__(self, db: JournalDb) -> None:
        self._db = db

    def holding(self, owner: int) -> list[tuple[str, AssociationState]]:
        """The associations of process ``owner`` that hold a place (open or releasing)."""
        rows = self._db.read(
            "SELECT association_id, state FROM associations WHERE owner = ? AND state IN (?, ?)",
            (owner, *HOLDING_A_PLACE),
        )
        return [(row[0], AssociationState(row[1])) for row in rows]

    def owners_holding(self) -> set[int]:
        """Every process that holds a place (rows from before owners were recorded: none)."""
        rows = self._db.read(
            "SELECT DISTINCT owner FROM associations WHERE owner IS NOT NULL AND state IN (?, ?)",
            HOLDING_A_PLACE,
        )
        return {int(row[0]) for row in rows}

    def end_owned(self, owner: int, cleanup_after: datetime) -> OwnerEnded:
        """The process ``owner`` ended: its associations end as they would after a crash.

        ``releasing`` ones count as released, open ones as aborted (as in
        :meth:`~ingest.journal.Journal.abort_all_open`). Returns the aborted ones, and every
        released one of the owner (it may have ended before handing them on).
        """
        with self._db.write() as cur:
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
                (AssociationState.ABORTED, timestamp(cleanup_after), owner, AssociationState.OPEN),
            )
            released = [
                row[0]
                for row in cur.execute(
                    "SELECT association_id FROM associations WHERE owner = ? AND state = ?",
                    (owner, AssociationState.RELEASED),
                )
            ]
        return OwnerEnded(aborted, released)
