"""The study watch on a real journal and file store: what it announces, and when it waits."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from contracts.cloudevent import parse_event, study_stable_from_event
from contracts.keys import object_key
from gateway.objectstore import FileStore
from gateway.settings import StorageSettings
from ingest.journal import Journal, StoredObject
from ingest.outbox import EventKind, OutboxEvent
from ingest.spool import Spool
from ingest.studies import record_announced
from ingest.study_watch import DUE_BATCH, StudyWatch
from tests.support.journal_rows import STARTED, begin, instance

QUIET = 60.0
LATER = STARTED + timedelta(hours=1)


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal.open(tmp_path / "journal.sqlite3")


def watch(journal: Journal, tmp_path: Path, max_event_bytes: int = 1_048_576) -> StudyWatch:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    store = FileStore(StorageSettings(path=tmp_path / "objects", bucket="images"))
    store.ensure_ready()
    return StudyWatch(
        journal,
        spool,
        store,
        instance_name="gw",
        max_event_bytes=max_event_bytes,
        history=timedelta(days=7),
        on_announced=lambda: None,
    )


def announce(
    journal: Journal, study: str, sops: list[str], *, series: str = "1.2.3.4", reason: str = ""
) -> str:
    aid = begin(journal)
    for seq, sop in enumerate(sops, start=1):
        journal.add_instance(
            replace(
                instance(aid, sop, seq),
                study_instance_uid=study,
                series_instance_uid=series,
                object_key=object_key(aid, study, series or None, sop),
                malformed_reason=reason or None,
            )
        )
    journal.mark_released(aid, STARTED)
    journal.mark_stored(
        [
            StoredObject(aid, sop, f"{seq:06d}.dcm", 100, "ab" * 32)
            for seq, sop in enumerate(sops, start=1)
        ]
    )
    event = OutboxEvent(aid, aid, "association.released.lung", "application/json", b"{}")
    journal.outbox.announce(event, STARTED, also=lambda c: record_announced(c, aid, QUIET, STARTED))
    return aid


def study_events(journal: Journal) -> list[dict[str, object]]:
    """The study events in the outbox (the associations' events published on the way)."""
    while associations := [
        e for e in journal.outbox.pending(LATER) if e.kind is EventKind.ASSOCIATION
    ]:
        for event in associations:
            journal.outbox.published(event)
    return [json.loads(e.body) for e in journal.outbox.pending(LATER) if e.kind is EventKind.STUDY]


def test_an_instance_stored_although_malformed_is_listed_with_its_reason(
    journal: Journal, tmp_path: Path
) -> None:
    announce(journal, "1.2.3", ["1.2.3.4.1"])
    announce(journal, "1.2.3", ["1.2.3.4.2"], series="", reason="no Series Instance UID")
    assert watch(journal, tmp_path).announce_due(LATER) == 1
    (event,) = study_events(journal)
    data = study_stable_from_event(
        parse_event(
            json.dumps(event).encode(), content_type="application/cloudevents+json", headers={}
        )
    )
    flagged = data.instances[1]
    assert (flagged.well_formed, flagged.reason, flagged.series_instance_uid) == (
        False,
        "no Series Instance UID",
        None,
    )
    assert data.instances[0].well_formed


def test_studies_still_arriving_do_not_hold_up_a_quiet_one(
    journal: Journal, tmp_path: Path
) -> None:
    for n in range(DUE_BATCH + 5):
        announce(journal, f"1.2.3.{n + 1}", ["1.2.3.4.1"])
        arriving = begin(journal)  # an open association adding to each study
        journal.add_instance(
            replace(instance(arriving, "1.2.3.4.9", 1), study_instance_uid=f"1.2.3.{n + 1}")
        )
    announce(journal, "1.2.9", ["1.2.3.4.1"])
    studies = watch(journal, tmp_path)
    assert studies.announce_due(LATER) == 0  # the first batch was all still arriving
    assert studies.announce_due(LATER) == 1  # ... and is looked at again later, not first
    (event,) = study_events(journal)
    assert event["subject"] == "1.2.9"


def test_a_study_of_many_associations_stays_within_the_event_limit(
    journal: Journal, tmp_path: Path
) -> None:
    for n in range(120):
        announce(journal, "1.2.3", [f"1.2.3.4.{n + 1}"])
    assert watch(journal, tmp_path, max_event_bytes=16_384).announce_due(LATER) == 1
    (event,) = study_events(journal)
    assert len(json.dumps(event)) <= 16_384
    data = event["data"]
    assert isinstance(data, dict)
    assert data["association_count"] == 120
    assert data["associations"] == []
    assert data["instance_count"] == 120
    assert data["manifest"] is not None


def test_studies_of_ae_titles_without_a_quiet_time_are_forgotten_at_start(
    journal: Journal,
) -> None:
    announce(journal, "1.2.3", ["1.2.3.4.1"])
    assert journal.studies.forget_unless_called(["GATEWAY"]) == 0
    assert journal.studies.forget_unless_called([]) == 1
    assert journal.studies.due(LATER, 10) == []


def test_instances_whose_objects_expired_leave_their_study(journal: Journal) -> None:
    old = announce(journal, "1.2.3", ["1.2.3.4.1"])
    assert journal.studies.forget_stored_before(STARTED) == 0
    assert journal.studies.forget_stored_before(STARTED + timedelta(seconds=1)) == 1
    (study,) = journal.studies.due(LATER, 10)
    assert journal.studies.instances(study) == []
    assert old not in [s.association_id for s in journal.studies.sources(study)]
