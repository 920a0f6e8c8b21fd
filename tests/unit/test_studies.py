"""Studies across associations in the journal, and the stable event built from them (real
SQLite in a temp dir)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.cloudevent import parse_event, study_stable_from_event
from contracts.keys import object_key
from contracts.studies import StudyStable
from ingest.journal import Journal, StoredObject
from ingest.outbox import EventKind, OutboxEvent
from ingest.studies import DueStudy, record_announced
from ingest.study_announcement import study_data, study_event, study_event_id
from tests.support.journal_rows import STARTED, begin, instance

QUIET = 60.0
STUDY = "1.2.3"


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal.open(tmp_path / "journal.sqlite3")


def announce(
    journal: Journal, sops: list[str], *, at: datetime, study: str = STUDY, stable: float = QUIET
) -> str:
    """An association storing ``sops`` of ``study``, released, stored and announced at ``at``."""
    aid = begin(journal)
    for seq, sop in enumerate(sops, start=1):
        spooled = replace(
            instance(aid, sop, seq),
            study_instance_uid=study,
            object_key=object_key(aid, STUDY, "1.2.3.4", sop),
        )
        journal.add_instance(spooled)
    journal.mark_released(aid, at)
    journal.mark_stored(
        [
            StoredObject(aid, sop, f"{seq:06d}.dcm", 100 * seq, "ab" * 32)
            for seq, sop in enumerate(sops, start=1)
        ]
    )
    event = OutboxEvent(aid, aid, "association.released.lung", "application/json", b"{}")
    journal.outbox.announce(event, at, also=lambda cur: record_announced(cur, aid, stable, at))
    return aid


def listed(journal: Journal, study: DueStudy) -> list[str]:
    return [entry.instance.sop_instance_uid for entry in journal.studies.instances(study)]


def test_a_study_is_due_after_its_quiet_time_with_every_association_s_instances(
    journal: Journal,
) -> None:
    first = announce(journal, ["1.2.3.4.1", "1.2.3.4.2"], at=STARTED)
    second = announce(journal, ["1.2.3.4.3"], at=STARTED + timedelta(seconds=10))
    assert journal.studies.due(STARTED + timedelta(seconds=69), 10) == []
    (study,) = journal.studies.due(STARTED + timedelta(seconds=70), 10)
    assert (study.called_ae_title, study.study_instance_uid, study.pipeline) == (
        "GATEWAY",
        STUDY,
        "lung",
    )
    assert study.revision == 0
    assert listed(journal, study) == ["1.2.3.4.1", "1.2.3.4.2", "1.2.3.4.3"]
    sources = journal.studies.sources(study)
    assert [(s.association_id, s.instance_count) for s in sources] == [(first, 2), (second, 1)]


def test_a_copy_sent_again_replaces_the_earlier_one(journal: Journal) -> None:
    announce(journal, ["1.2.3.4.1", "1.2.3.4.2"], at=STARTED)
    again = announce(journal, ["1.2.3.4.1"], at=STARTED + timedelta(seconds=1))
    (study,) = journal.studies.due(STARTED + timedelta(hours=1), 10)
    entries = journal.studies.instances(study)
    assert [e.instance.sop_instance_uid for e in entries] == ["1.2.3.4.2", "1.2.3.4.1"]
    assert entries[1].instance.object_key.startswith(again)
    assert sum(s.instance_count for s in journal.studies.sources(study)) == 2


@pytest.mark.parametrize("study_uid", ["", "1.2.03", "not a uid"])
def test_an_instance_without_a_valid_study_uid_belongs_to_no_study(
    journal: Journal, study_uid: str
) -> None:
    announce(journal, ["1.2.3.4.1"], at=STARTED, study=study_uid)
    assert journal.studies.due(STARTED + timedelta(days=1), 10) == []


def test_a_study_still_arriving_on_an_open_association_is_in_flight(journal: Journal) -> None:
    announce(journal, ["1.2.3.4.1"], at=STARTED)
    (study,) = journal.studies.due(STARTED + timedelta(hours=1), 10)
    assert not journal.studies.in_flight(study)
    open_one = begin(journal)
    journal.add_instance(instance(open_one, "1.2.3.4.9", 1))
    assert journal.studies.in_flight(study)
    journal.mark_aborted(open_one, STARTED)
    assert not journal.studies.in_flight(study)


def test_putting_the_event_counts_a_revision_unless_the_study_changed(journal: Journal) -> None:
    announce(journal, ["1.2.3.4.1"], at=STARTED)
    later = STARTED + timedelta(hours=1)
    (study,) = journal.studies.due(later, 10)
    event = study_outbox_event(journal, study)
    announce(journal, ["1.2.3.4.2"], at=STARTED + timedelta(seconds=5))  # changed meanwhile
    assert not journal.studies.put_event(study, event, later)
    assert journal.outbox.depth() == 2  # the two associations' events only

    (study,) = journal.studies.due(later, 10)
    event = study_outbox_event(journal, study)
    assert journal.studies.put_event(study, event, later)
    assert journal.studies.due(later, 10) == []
    assert journal.studies.pending_count() == 0
    pending = {e.event_id: e for e in journal.outbox.pending(later)}
    assert pending[event.event_id].kind is EventKind.STUDY

    # Published: the study event goes, the study stays for its next revision.
    journal.outbox.published(pending[event.event_id])
    announce(journal, ["1.2.3.4.3"], at=later)
    (study,) = journal.studies.due(later + timedelta(hours=1), 10)
    assert study.revision == 1
    assert study_event_id(study) != event.event_id
    assert listed(journal, study) == ["1.2.3.4.1", "1.2.3.4.2", "1.2.3.4.3"]


def test_a_study_quiet_for_longer_than_its_history_is_forgotten(journal: Journal) -> None:
    announce(journal, ["1.2.3.4.1"], at=STARTED)
    (study,) = journal.studies.due(STARTED + timedelta(hours=1), 10)
    assert journal.studies.forget_quiet(STARTED + timedelta(days=30)) == 0  # not announced yet
    assert journal.studies.put_event(study, study_outbox_event(journal, study), STARTED)
    assert journal.studies.forget_quiet(STARTED) == 0  # quiet since, not before
    assert journal.studies.forget_quiet(STARTED + timedelta(seconds=1)) == 1
    assert journal.studies.instances(study) == []


def test_a_dropped_association_leaves_its_studies_which_are_announced_again(
    journal: Journal,
) -> None:
    kept = announce(journal, ["1.2.3.4.1"], at=STARTED)
    dropped = announce(journal, ["1.2.3.4.2"], at=STARTED)
    (study,) = journal.studies.due(STARTED + timedelta(hours=1), 10)
    assert journal.studies.put_event(study, study_outbox_event(journal, study), STARTED)
    later = STARTED + timedelta(days=1)
    journal.held.leave_studies(dropped, later)  # as the operator command does
    journal.held.drop(dropped)
    assert journal.studies.due(later, 10) == []
    (study,) = journal.studies.due(later + timedelta(seconds=QUIET), 10)
    assert [s.association_id for s in journal.studies.sources(study)] == [kept]


def study_outbox_event(journal: Journal, study: DueStudy) -> OutboxEvent:
    entries = journal.studies.instances(study)
    data = study_data(
        study,
        journal.studies.sources(study),
        bucket="images",
        instances=tuple(e.instance for e in entries),
        total_bytes=sum(e.instance.size for e in entries),
    )
    return study_event(
        data, event_id=study_event_id(study), instance_name="gw", now=study.changed_at
    )


def test_the_event_is_a_stable_study_cloudevent_with_one_id_per_revision(
    journal: Journal,
) -> None:
    aid = announce(journal, ["1.2.3.4.1", "1.2.3.4.2"], at=STARTED)
    (study,) = journal.studies.due(STARTED + timedelta(hours=1), 10)
    event = study_outbox_event(journal, study)
    assert event.routing_key == "study.stable.lung"
    assert event.kind is EventKind.STUDY
    assert study_event_id(study) == study_event_id(study)  # built again after a crash: same id
    assert study_event_id(replace(study, revision=1)) != study_event_id(study)
    cloud = parse_event(event.body, content_type=event.content_type, headers={})
    assert cloud.get_id() == event.event_id
    assert cloud.get_subject() == STUDY
    data = study_stable_from_event(cloud)
    assert data.revision == 1
    assert data.instance_count == 2
    assert data.total_bytes == 300
    assert [a.association_id for a in data.associations] == [aid]
    assert json.loads(event.body)["type"] == "dicomgateway.study.stable.v1"


def test_the_contract_refuses_inconsistent_counts(journal: Journal) -> None:
    announce(journal, ["1.2.3.4.1", "1.2.3.4.2"], at=STARTED)
    (study,) = journal.studies.due(STARTED + timedelta(hours=1), 10)
    body = study_outbox_event(journal, study).body
    data = study_stable_from_event(
        parse_event(body, content_type="application/cloudevents+json", headers={})
    )
    dumped = data.model_dump()
    for change, message in (
        ({"instance_count": 3}, "associations account for 2"),
        ({"total_bytes": 1}, "total_bytes"),
        ({"instances": dumped["instances"][:1]}, "1 instances are listed"),
    ):
        with pytest.raises(ValidationError, match=message):
            StudyStable.model_validate({**dumped, **change})
