"""``dicom-gateway associations``: what the journal holds, for operators.

``list`` and ``show`` read; ``retry`` puts a failed association (set aside because storing it
kept failing for a reason other than an outage) back to be stored; ``drop`` removes a failed or
aborted association, or one whose event is set aside, with its spool files and stored objects
(or a set-aside stable-study event, listed by ``list`` too);
``reannounce`` publishes an association's event again, with the same id, for a pipeline that
lost it (events are remembered ``ingest.history_days`` after their confirm).
They work on a stopped gateway's journal and next to a running one (a running gateway's
maintenance pass takes a retried association up within seconds). Unknown ids and associations
in a state the command cannot take are :class:`~gateway.errors.UsageError`, one line each
(exit status 2).
"""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.keys import association_prefix, is_valid_association_id
from gateway.errors import UsageError
from gateway.objectstore import ObjectStore
from ingest.held import HeldAssociation
from ingest.journal import Journal
from ingest.journal_db import AssociationState
from ingest.spool import Spool

#: What ``drop`` takes without ``--yes`` being enough reason to refuse: states no running
#: process is working on (an aborted one's removal may be pending; doing it now is the same).
DROPPABLE = (AssociationState.FAILED, AssociationState.ABORTED)


def describe(held: HeldAssociation, now: datetime) -> str:
    """One association on one line (pure)."""
    seconds = max(int((now - held.started_at).total_seconds()), 0)
    age = f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds}s"
    line = (
        f"{held.association_id} {held.state.value} called={held.called_ae_title} "
        f"calling={held.calling_ae_title} from={held.remote_host}:{held.remote_port} "
        f"instances={held.instances} stored={held.stored} bytes={held.data_set_bytes} age={age}"
    )
    if held.event_set_aside is not None:
        line += f" event=set-aside ({held.event_set_aside})"
    return line


def listing(journal: Journal) -> list[str]:
    now = datetime.now(UTC)
    return [describe(held, now) for held in journal.held.all()] + [
        f"{event_id} study-event routing={routing_key} event=set-aside ({reason})"
        for event_id, routing_key, reason in journal.held.set_aside_study_events()
    ]


def shown(journal: Journal, association_id: str) -> str:
    return describe(_held(journal, association_id), datetime.now(UTC))


def retry(journal: Journal, association_id: str) -> str:
    held = _held(journal, association_id)
    if not journal.held.retry(association_id):
        raise UsageError(
            f"association {association_id} is {held.state.value}: only a failed one can be retried"
        )
    return (
        f"association {association_id}: storing it is tried again (by a running ingest within "
        "seconds, else at its next start)"
    )


def drop(journal: Journal, spool: Spool, store: ObjectStore, association_id: str) -> str:
    if (
        is_valid_association_id(association_id)
        and journal.held.one(association_id) is None
        and journal.held.drop_study_event(association_id)
    ):
        return (
            f"study event {association_id} dropped: the study's next revision is announced "
            "when more of its instances arrive"
        )
    held = _held(journal, association_id)
    if held.state not in DROPPABLE and held.event_set_aside is None:
        raise UsageError(
            f"association {association_id} is {held.state.value}: only a failed or aborted "
            "association, or one whose event is set aside, can be dropped"
        )
    journal.held.leave_studies(association_id, datetime.now(UTC))
    removed = store.remove_prefix(association_prefix(association_id))
    spool.remove_association(association_id)
    journal.held.drop(association_id)
    return (
        f"association {association_id} dropped: {held.instances} spooled instances, "
        f"{removed} stored objects"
    )


def reannounce(journal: Journal, association_id: str) -> str:
    """Publish a published association's event again: same id and body, so consumers that
    saw it deduplicate, and one that lost it gets it."""
    if not is_valid_association_id(association_id):
        raise UsageError(f"{association_id!r} is not an association id (a lowercase UUID)")
    held = journal.held.one(association_id)
    if held is not None:
        waiting = held.state is AssociationState.ANNOUNCED
        raise UsageError(
            f"association {association_id} is {held.state.value}: "
            + ("its event waits to be published already" if waiting else "it has no event yet")
        )
    routing_key = journal.outbox.reannounce(association_id, datetime.now(UTC))
    if routing_key is None:
        raise UsageError(
            f"no published event of association {association_id} in the journal (it remembers "
            "them for ingest.history_days)"
        )
    return (
        f"association {association_id}: its event is published again to {routing_key} with "
        "the same id (by a running ingest within seconds, else at its next start)"
    )


def _held(journal: Journal, association_id: str) -> HeldAssociation:
    if not is_valid_association_id(association_id):
        raise UsageError(f"{association_id!r} is not an association id (a lowercase UUID)")
    held = journal.held.one(association_id)
    if held is None:
        raise UsageError(f"no association {association_id} in the journal")
    return held
