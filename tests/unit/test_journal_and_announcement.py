"""The journal's state machine and the event built from it (real SQLite in a temp dir)."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from contracts.cloudevent import CONTENT_TYPE_STRUCTURED
from contracts.keys import new_association_id
from gateway.errors import JournalError
from ingest.announcement import (
    ManifestSummary,
    manifest_data,
    may_fit_inline,
    released_data,
    released_event,
)
from ingest.journal import (
    AssociationNotOpen,
    Journal,
    StoredObject,
)
from ingest.journal_db import AssociationState
from ingest.outbox import OutboxEvent
from ingest.ownership import EndedAssociation, OwnerEnded
from ingest.policy import Limit, Limits
from tests.support.journal_rows import STARTED, begin, instance, record


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal.open(tmp_path / "journal.sqlite3")


def test_released_association_is_announced_once_with_every_instance(journal: Journal) -> None:
    aid = begin(journal)
    journal.add_instance(instance(aid, "1.2.3.4.1", 1))
    journal.add_instance(instance(aid, "1.2.3.4.2", 2))
    journal.mark_released(aid, STARTED + timedelta(seconds=3))
    assert journal.associations_in_state(AssociationState.RELEASED) == [aid]
    journal.mark_stored(
        [
            StoredObject(aid, sop, f"{seq:06d}.dcm", 1200, "ab" * 32)
            for seq, sop in ((1, "1.2.3.4.1"), (2, "1.2.3.4.2"))
        ]
    )

    association = journal.association(aid)
    event = released_event(
        association,
        released_data(association, journal.instances(aid), "images"),
        instance_name="gw-1",
        now=STARTED + timedelta(seconds=4),
    )
    journal.outbox.announce(event, STARTED)
    assert journal.association(aid).state is AssociationState.ANNOUNCED
    assert [e.event_id for e in journal.outbox.pending(STARTED)] == [aid]

    body = json.loads(event.body)
    assert event.content_type == CONTENT_TYPE_STRUCTURED
    assert event.routing_key == "association.released.lung"
    assert body["id"] == aid
    assert body["type"] == "dicomgateway.association.released.v1"
    assert body["source"] == "dicom-gateway://gw-1/GATEWAY"
    assert body["subject"] == "1.2.3"
    assert body["data"]["instance_count"] == 2
    assert body["data"]["total_bytes"] == 2400
    assert [i["sop_instance_uid"] for i in body["data"]["instances"]] == ["1.2.3.4.1", "1.2.3.4.2"]

    journal.outbox.published(event)
    assert journal.outbox.pending(STARTED) == []
    assert journal.outbox.depth() == 0
    assert journal.known_associations() == []


def test_resent_instance_replaces_the_earlier_copy(journal: Journal) -> None:
    aid = begin(journal)
    assert journal.add_instance(instance(aid, "1.2.3.4.1", 1)) is None
    assert journal.add_instance(instance(aid, "1.2.3.4.1", 2)) == "000001.dcm"
    assert [i.spool_name for i in journal.instances(aid)] == ["000002.dcm"]


def test_no_instance_is_added_after_an_abort(journal: Journal) -> None:
    aid = begin(journal)
    journal.mark_aborted(aid, STARTED)
    with pytest.raises(AssociationNotOpen):
        journal.add_instance(instance(aid, "1.2.3.4.1", 1))


def test_release_after_abort_does_not_resurrect(journal: Journal) -> None:
    aid = begin(journal)
    journal.mark_aborted(aid, STARTED)
    journal.mark_released(aid, STARTED)
    assert journal.association(aid).state is AssociationState.ABORTED


def test_restart_aborts_what_was_open(journal: Journal) -> None:
    open_id = begin(journal)
    released_id = begin(journal)
    journal.mark_released(released_id, STARTED)
    assert journal.abort_all_open(STARTED) == [open_id]
    assert journal.aborted_due(STARTED + timedelta(seconds=1)) == [open_id]
    assert journal.associations_in_state(AssociationState.RELEASED) == [released_id]


def test_delayed_cleanup_is_not_due_early(journal: Journal) -> None:
    aid = begin(journal)
    journal.mark_aborted(aid, STARTED + timedelta(seconds=60))
    assert journal.aborted_due(STARTED) == []
    assert journal.aborted_due(STARTED + timedelta(seconds=61)) == [aid]


def test_event_needs_every_instance_stored(journal: Journal) -> None:
    aid = begin(journal)
    journal.add_instance(instance(aid, "1.2.3.4.1", 1))
    journal.mark_released(aid, STARTED)
    with pytest.raises(ValueError, match="not stored"):
        released_data(journal.association(aid), journal.instances(aid), "b")


def test_a_release_requested_before_a_crash_counts_as_released(journal: Journal) -> None:
    aid = begin(journal)
    journal.add_instance(instance(aid, "1.2.3.4.1", 1))
    journal.mark_releasing(aid, STARTED)  # A-RELEASE-RQ recorded; the RP may have gone out
    assert journal.abort_all_open(STARTED) == []
    assert journal.association(aid).state is AssociationState.RELEASED
    assert journal.association(aid).released_at == STARTED


def test_an_abort_after_the_release_request_still_aborts(journal: Journal) -> None:
    aid = begin(journal)
    journal.mark_releasing(aid, STARTED)
    journal.mark_aborted(aid, STARTED)
    assert journal.association(aid).state is AssociationState.ABORTED


def test_a_release_is_recorded_only_while_the_association_is_open(journal: Journal) -> None:
    # A restarted parent (or the settling of a dead worker's rows) may have aborted the row
    # while its connection still lives: that release must not be confirmed to the sender.
    opened, aborted = begin(journal), begin(journal)
    journal.mark_aborted(aborted, STARTED)
    assert journal.mark_releasing(opened, STARTED)
    assert not journal.mark_releasing(opened, STARTED)  # already releasing
    assert not journal.mark_releasing(aborted, STARTED)
    assert journal.association(aborted).state is AssociationState.ABORTED


def test_no_instance_is_added_once_the_release_is_requested(journal: Journal) -> None:
    aid = begin(journal)
    journal.mark_releasing(aid, STARTED)
    with pytest.raises(AssociationNotOpen):
        journal.add_instance(instance(aid, "1.2.3.4.1", 1))


def test_the_limit_counts_open_and_releasing_associations(journal: Journal) -> None:
    first, second = begin(journal), begin(journal)
    journal.mark_releasing(second, STARTED)
    assert journal.open_count() == 2
    third = new_association_id()
    assert journal.begin_association(record(third), Limits(2)) is Limit.TOTAL
    with pytest.raises(JournalError, match="not in the journal"):
        journal.association(third)  # a refused admission records nothing
    journal.mark_aborted(first, STARTED)
    assert journal.begin_association(record(third), Limits(2)) is None
    assert journal.open_count() == 2


@pytest.mark.parametrize(
    ("limits", "calling", "address", "reached"),
    [
        (Limits(10, per_calling_ae=2), "CT01", "10.0.0.9", Limit.CALLING_AE),
        (Limits(10, per_calling_ae=2), "MR01", "127.0.0.1", None),  # another title
        (Limits(10, per_address=2), "MR01", "127.0.0.1", Limit.ADDRESS),
        (Limits(10, per_address=2), "CT01", "10.0.0.9", None),  # another address
        (Limits(10, per_calling_ae=3, per_address=3), "CT01", "127.0.0.1", None),
        (Limits(2, per_calling_ae=5), "MR01", "10.0.0.9", Limit.TOTAL),
    ],
)
def test_limits_per_calling_ae_title_and_per_address(
    journal: Journal, limits: Limits, calling: str, address: str, reached: Limit | None
) -> None:
    begin(journal), begin(journal)  # two from CT01 at 127.0.0.1
    new = replace(record(new_association_id()), calling_ae_title=calling, remote_host=address)
    assert journal.begin_association(new, limits) is reached


def test_a_second_process_sees_the_same_limit(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    one, other = Journal.open(path), Journal.open(path)  # two connections, as two processes
    begin(one)
    assert other.begin_association(record(new_association_id()), Limits(1)) is Limit.TOTAL
    assert other.open_count() == 1


def test_an_ended_owner_aborts_what_it_had_open_and_hands_on_its_releases(
    journal: Journal,
) -> None:
    opened, releasing, released, announced = (begin(journal) for _ in range(4))
    journal.mark_releasing(releasing, STARTED)
    journal.mark_released(released, STARTED)
    journal.mark_released(announced, STARTED)
    journal.outbox.announce(
        OutboxEvent("e", announced, "association.released.lung", "x", b"{}"), STARTED
    )
    assert journal.ownership.end_owned(os.getpid() + 1, STARTED) == OwnerEnded([], [])
    ended = journal.ownership.end_owned(os.getpid(), STARTED)
    assert ended.aborted == [EndedAssociation(opened, "GATEWAY")]
    assert sorted(ended.released) == sorted([releasing, released])
    assert journal.association(opened).state is AssociationState.ABORTED
    assert journal.aborted_due(STARTED) == [opened]
    assert journal.open_count() == 0


def test_a_journal_from_before_worker_processes_gets_the_owner_column(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE associations (association_id TEXT PRIMARY KEY, called_ae_title TEXT"
        " NOT NULL, calling_ae_title TEXT NOT NULL, remote_host TEXT NOT NULL, remote_port"
        " INTEGER NOT NULL, pipeline TEXT NOT NULL, started_at TEXT NOT NULL, state TEXT NOT"
        " NULL, released_at TEXT, cleanup_after TEXT)"
    )
    old.execute(
        "INSERT INTO associations VALUES ('a', 'GATEWAY', 'CT01', 'h', 1, 'p', ?, 'open',"
        " NULL, NULL)",
        (STARTED.isoformat(),),
    )
    old.commit()
    old.close()
    journal = Journal.open(path)
    begin(journal)
    assert journal.open_count() == 2
    assert journal.abort_all_open(STARTED) != []


def test_a_failed_read_is_a_journal_error_whatever_is_read(journal: Journal) -> None:
    journal.close()
    for read in (
        lambda: journal.instances("a"),
        lambda: journal.association("a"),
        journal.known_associations,
        journal.outbox.depth,
        lambda: journal.ownership.holding(os.getpid()),
    ):
        with pytest.raises(JournalError, match="journal read failed"):
            read()


@pytest.mark.parametrize(
    ("count", "limit", "may_fit"),
    [(1, 16_384, True), (64, 16_384, True), (65, 16_384, False), (4096, 1_048_576, True)],
)
def test_whether_a_list_may_fit_is_known_before_building_it(
    count: int, limit: int, may_fit: bool
) -> None:
    assert may_fit_inline(count, limit) is may_fit


def test_a_manifest_event_names_the_manifest_and_lists_nothing(journal: Journal) -> None:
    aid = begin(journal)
    journal.mark_released(aid, STARTED)
    summary = ManifestSummary(
        size=5000,
        sha256="cd" * 32,
        instance_count=180_000,
        total_bytes=9_000_000,
        first_study_instance_uid="1.2.3",
    )
    association = journal.association(aid)
    event = released_event(
        association,
        manifest_data(association, summary, "images"),
        instance_name="gw",
        now=STARTED,
        subject=summary.first_study_instance_uid,
    )
    body = json.loads(event.body)
    assert len(event.body) < 2048
    assert body["subject"] == "1.2.3"
    assert body["data"]["instances"] == []
    assert body["data"]["instance_count"] == 180_000
    assert body["data"]["manifest"] == {
        "object_key": f"{aid}/instances.jsonl",
        "size": 5000,
        "sha256": "cd" * 32,
    }


FIRST_SCHEMA = """
CREATE TABLE associations (association_id TEXT PRIMARY KEY, called_ae_title TEXT NOT NULL,
    calling_ae_title TEXT NOT NULL, remote_host TEXT NOT NULL, remote_port INTEGER NOT NULL,
    pipeline TEXT NOT NULL, started_at TEXT NOT NULL, state TEXT NOT NULL, released_at TEXT,
    cleanup_after TEXT);
CREATE TABLE instances (association_id TEXT NOT NULL, sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL, transfer_syntax_uid TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL, series_instance_uid TEXT NOT NULL,
    spool_name TEXT NOT NULL, data_offset INTEGER NOT NULL, data_length INTEGER NOT NULL,
    received_seq INTEGER NOT NULL, object_key TEXT NOT NULL, size INTEGER, sha256 TEXT,
    PRIMARY KEY (association_id, sop_instance_uid));
CREATE TABLE outbox (event_id TEXT PRIMARY KEY, association_id TEXT NOT NULL,
    routing_key TEXT NOT NULL, content_type TEXT NOT NULL, body BLOB NOT NULL,
    created_at TEXT NOT NULL, not_before TEXT);
"""


def test_a_journal_of_the_first_version_gets_the_later_columns(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(FIRST_SCHEMA)
        old.execute("ALTER TABLE outbox ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0")
    old.close()  # as a start cut short between two of the added columns leaves it
    journal = Journal.open(path)
    aid = begin(journal)
    journal.mark_released(aid, STARTED)
    journal.outbox.announce(
        OutboxEvent(aid, aid, "association.released.default", "x", b"{}"), STARTED
    )
    assert journal.outbox.refused(aid, "nack", STARTED) == 1
    assert journal.in_storage(aid) is False
