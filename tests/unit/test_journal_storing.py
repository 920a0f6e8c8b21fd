"""What the journal records about uploads made while an association is open: whether objects of
it may be in storage, and which copy of an instance an upload stored."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ingest.journal import Journal, StoredObject
from ingest.journal_db import AssociationState
from tests.support.journal_rows import STARTED, begin, instance


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal.open(tmp_path / "journal.sqlite3")


def test_an_association_is_in_storage_only_once_storing_started(journal: Journal) -> None:
    aid = begin(journal)
    assert not journal.in_storage(aid)
    assert journal.start_storing(aid)
    assert journal.in_storage(aid)


@pytest.mark.parametrize(
    ("storing_first", "expected"), [(False, False), (True, True)], ids=["untouched", "uploading"]
)
def test_an_abort_says_whether_objects_may_be_in_storage(
    journal: Journal, storing_first: bool, expected: bool
) -> None:
    aid = begin(journal)
    if storing_first:
        journal.start_storing(aid)
    assert journal.mark_aborted(aid, STARTED) is expected


def test_nothing_of_an_aborted_association_may_start_storing(journal: Journal) -> None:
    aid = begin(journal)
    journal.mark_aborted(aid, STARTED)
    assert not journal.start_storing(aid)
    assert not journal.in_storage(aid)


def test_a_released_association_may_still_start_storing(journal: Journal) -> None:
    aid = begin(journal)
    journal.mark_released(aid, STARTED + timedelta(seconds=1))
    assert journal.start_storing(aid)


def test_an_upload_of_an_earlier_copy_does_not_store_its_replacement(journal: Journal) -> None:
    """The same SOP instance sent twice: the upload of the first copy finishing late must not
    mark the second copy stored."""
    aid = begin(journal)
    journal.add_instance(instance(aid, "1.2.3.4.1", 1, spool_name="first.dcm"))
    journal.add_instance(instance(aid, "1.2.3.4.1", 2, spool_name="second.dcm"))
    journal.mark_stored([StoredObject(aid, "1.2.3.4.1", "first.dcm", 1300, "ab" * 32)])
    assert [i.spool_name for i in journal.instances(aid, unstored=True)] == ["second.dcm"]
    journal.mark_stored([StoredObject(aid, "1.2.3.4.1", "second.dcm", 1300, "cd" * 32)])
    assert journal.instances(aid, unstored=True) == []
    assert journal.state(aid) is AssociationState.OPEN
