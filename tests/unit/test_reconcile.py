"""Journal rows whose association ended without the end being recorded are settled later."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from prometheus_client import CollectorRegistry
from pynetdicom.association import Association

from contracts.keys import new_association_id
from gateway.metrics import IngestMetrics
from gateway.settings import AESettings, GatewaySettings
from ingest.associations import (
    ActiveAssociation,
    IngestContext,
    reconcile,
    settle_ended_threads,
)
from ingest.incoming import IncomingFiles
from ingest.journal import AssociationRecord, Journal
from ingest.journal_db import AssociationState
from ingest.policy import Limits
from ingest.spool import Spool

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Submitted(list[str]):
    """The released associations handed on (spooled and aborted ones play no part here)."""

    def spooled(self, association_id: str) -> None:
        return None

    def released(self, association_id: str) -> None:
        self.append(association_id)

    def aborted(self, association_id: str) -> None:
        return None


def context(tmp_path: Path, submitted: Submitted) -> IngestContext:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    return IngestContext(
        settings=GatewaySettings(),
        journal=Journal.open(spool.journal_path),
        spool=spool,
        uploader=submitted,
        incoming=IncomingFiles(spool.incoming),
        metrics=IngestMetrics.register(CollectorRegistry()).listener_counters(),
    )


def begin(ctx: IngestContext) -> str:
    association_id = new_association_id()
    record = AssociationRecord(association_id, "GATEWAY", "CT01", "h", 1, "default", STARTED)
    assert ctx.journal.begin_association(record, Limits(100)) is None
    return association_id


def test_rows_of_ended_associations_are_settled_and_live_ones_left_alone(
    tmp_path: Path,
) -> None:
    submitted = Submitted()
    ctx = context(tmp_path, submitted)
    live, lost_abort, lost_release = begin(ctx), begin(ctx), begin(ctx)
    ctx.journal.mark_releasing(lost_release, STARTED)
    ctx.table.add(
        cast(Association, object()),
        ActiveAssociation(live, AESettings(ae_title="GATEWAY"), "CT01", "h", 1, STARTED),
    )
    reconcile(ctx)
    assert ctx.journal.state(live) is AssociationState.OPEN
    assert ctx.journal.state(lost_abort) is AssociationState.ABORTED
    assert ctx.journal.state(lost_release) is AssociationState.RELEASED
    assert submitted == [lost_release]
    assert ctx.journal.ownership.holding(os.getpid()) == [(live, AssociationState.OPEN)]
    assert ctx.journal.ownership.owners_holding() == {os.getpid()}
    reconcile(ctx)  # nothing more to do
    assert submitted == [lost_release]


class EndedThread:
    """What the table asks of an association: whether its thread still runs."""

    def __init__(self, alive: bool) -> None:
        self.alive = alive

    def is_alive(self) -> bool:
        return self.alive


def test_associations_whose_thread_ended_without_an_event_give_their_place_back(
    tmp_path: Path,
) -> None:
    """pynetdicom ended an association without EVT_ABORTED when an undecodable PDU followed
    its A-ASSOCIATE-RQ at once (found by the generated hostile input, seed 697256): its place
    stayed taken until the next association request."""
    submitted = Submitted()
    ctx = context(tmp_path, submitted)
    live, ended, ended_releasing = begin(ctx), begin(ctx), begin(ctx)
    ctx.journal.mark_releasing(ended_releasing, STARTED)
    for association_id, alive, releasing in [
        (live, True, False),
        (ended, False, False),
        (ended_releasing, False, True),
    ]:
        active = ActiveAssociation(
            association_id, AESettings(ae_title="GATEWAY"), "CT01", "h", 1, STARTED
        )
        active.releasing = releasing
        ctx.table.add(cast(Association, EndedThread(alive)), active)
    settle_ended_threads(ctx)
    reconcile(ctx)
    assert ctx.table.association_ids() == {live}
    # The aborted one is forgotten at once (no cleanup delay), the released one handed on.
    assert ctx.journal.state(ended) is None
    assert ctx.journal.state(ended_releasing) is AssociationState.RELEASED
    assert submitted == [ended_releasing]
    assert ctx.journal.open_count() == 1
