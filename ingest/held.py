"""What the journal holds, for operators: associations listed, one shown, a set-aside one
retried or dropped (``dicom-gateway associations``, :mod:`ingest.association_commands`).

A view on the journal's connection (:mod:`ingest.journal_db`), like the outbox: every change
is one transaction under the write lock the running service takes too, so a command run next
to a running gateway never leaves the journal half changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ingest.journal_db import AssociationState, JournalDb, delete_association
from ingest.outbox import EventKind
from ingest.studies import forget_association

_SUMMARY = (
    "SELECT a.association_id, a.state, a.called_ae_title, a.calling_ae_title, a.remote_host,"
    " a.remote_port, a.started_at, a.released_at,"
    " (SELECT COUNT(*) FROM instances i WHERE i.association_id = a.association_id),"
    " (SELECT COALESCE(SUM(i.data_length), 0) FROM instances i"
    "  WHERE i.association_id = a.association_id),"
    " (SELECT COUNT(*) FROM instances i WHERE i.association_id = a.association_id"
    "  AND i.sha256 IS NOT NULL),"
    " (SELECT o.set_aside FROM outbox o WHERE o.association_id = a.association_id)"
    " FROM associations a"
)


@dataclass(frozen=True)
class HeldAssociation:
    """One association the journal holds, as an operator sees it."""

    association_id: str
    state: AssociationState
    called_ae_title: str
    calling_ae_title: str
    remote_host: str
    remote_port: int
    started_at: datetime
    released_at: datetime | None
    instances: int
    #: The data sets' bytes, as received.
    data_set_bytes: int
    #: Instances already in object storage.
    stored: int
    #: Why its event is set aside (the broker refused it again and again), if it is.
    event_set_aside: str | None


class HeldAssociations:
    """Thread-safe, as the :class:`~ingest.journal_db.JournalDb` it works on."""

    def __init__(self, db: JournalDb) -> None:
        self._db = db

    def all(self) -> list[HeldAssociation]:
        """Every association the journal holds, oldest first."""
        return [_held(row) for row in self._db.read(_SUMMARY + " ORDER BY a.started_at")]

    def one(self, association_id: str) -> HeldAssociation | None:
        rows = self._db.read(_SUMMARY + " WHERE a.association_id = ?", (association_id,))
        return _held(rows[0]) if rows else None

    def retry(self, association_id: str) -> bool:
        """A failed association back to released, so that storing it is tried again; False if
        it is not failed (then nothing changed)."""
        with self._db.write() as cur:
            cur.execute(
                "UPDATE associations SET state = ? WHERE association_id = ? AND state = ?",
                (AssociationState.RELEASED, association_id, AssociationState.FAILED),
            )
            return cur.rowcount == 1

    def set_aside_note(self) -> str | None:
        """For ``/readyz``: what waits for an operator, if anything (counts only)."""
        ((failed, set_aside),) = self._db.read(
            "SELECT (SELECT COUNT(*) FROM associations WHERE state = ?),"
            " (SELECT COUNT(*) FROM outbox WHERE set_aside IS NOT NULL)",
            (AssociationState.FAILED,),
        )
        if not failed and not set_aside:
            return None
        return (
            f"{failed} association(s) failed and {set_aside} event(s) set aside: "
            "see dicom-gateway associations list"
        )

    def leave_studies(self, association_id: str, now: datetime) -> None:
        """Take a dropped association's instances out of their studies: done before its
        objects go, so that no study event names them meanwhile."""
        with self._db.write() as cur:
            forget_association(cur, association_id, now)

    def drop(self, association_id: str) -> None:
        """Forget a dropped association (its files and objects are gone)."""
        with self._db.write() as cur:
            delete_association(cur, association_id)

    def set_aside_study_events(self) -> list[tuple[str, str, str]]:
        """Stable-study events set aside after repeated refusals: (id, routing key, why)."""
        rows = self._db.read(
            "SELECT event_id, routing_key, set_aside FROM outbox"
            " WHERE kind = ? AND set_aside IS NOT NULL ORDER BY created_at",
            (EventKind.STUDY,),
        )
        return [(str(row[0]), str(row[1]), str(row[2])) for row in rows]

    def drop_study_event(self, event_id: str) -> bool:
        """Remove a set-aside study event; False if there is none with that id."""
        with self._db.write() as cur:
            cur.execute(
                "DELETE FROM outbox WHERE event_id = ? AND kind = ? AND set_aside IS NOT NULL",
                (event_id, EventKind.STUDY),
            )
            return cur.rowcount == 1

    def failed_count(self) -> int:
        ((count,),) = self._db.read(
            "SELECT COUNT(*) FROM associations WHERE state = ?", (AssociationState.FAILED,)
        )
        return int(count)


def _held(row: tuple[object, ...]) -> HeldAssociation:
    (aid, state, called, calling, host, port, started, released, count, size, stored, aside) = row
    return HeldAssociation(
        association_id=str(aid),
        state=AssociationState(str(state)),
        called_ae_title=str(called),
        calling_ae_title=str(calling),
        remote_host=str(host),
        remote_port=int(str(port)),
        started_at=datetime.fromisoformat(str(started)),
        released_at=None if released is None else datetime.fromisoformat(str(released)),
        instances=int(str(count)),
        data_set_bytes=int(str(size)),
        stored=int(str(stored)),
        event_set_aside=None if aside is None else str(aside),
    )
