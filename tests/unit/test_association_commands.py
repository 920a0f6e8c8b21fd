"""How ``dicom-gateway associations`` describes an association (pure), and what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import UsageError
from ingest.association_commands import describe, retry
from ingest.held import HeldAssociation
from ingest.journal import Journal
from ingest.journal_db import AssociationState
from tests.support.journal_rows import STARTED, begin

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
AID = "0b5c8a6e-2f1d-4c3b-9a7e-5d4f3c2b1a09"


def held(age: timedelta, set_aside: str | None = None) -> HeldAssociation:
    return HeldAssociation(
        association_id=AID,
        state=AssociationState.FAILED,
        called_ae_title="GATEWAY",
        calling_ae_title="CT01",
        remote_host="10.0.0.5",
        remote_port=4242,
        started_at=NOW - age,
        released_at=None,
        instances=12,
        data_set_bytes=6_291_456,
        stored=3,
        event_set_aside=set_aside,
    )


@pytest.mark.parametrize(
    ("age", "set_aside", "line"),
    [
        (
            timedelta(seconds=42),
            None,
            f"{AID} failed called=GATEWAY calling=CT01 from=10.0.0.5:4242 instances=12 stored=3 "
            "bytes=6291456 age=42s",
        ),
        (
            timedelta(hours=2, minutes=3),
            "nack",
            f"{AID} failed called=GATEWAY calling=CT01 from=10.0.0.5:4242 instances=12 stored=3 "
            "bytes=6291456 age=2h03m event=set-aside (nack)",
        ),
    ],
)
def test_one_line_per_association(age: timedelta, set_aside: str | None, line: str) -> None:
    assert describe(held(age, set_aside), NOW) == line


def test_only_a_failed_association_is_retried(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.sqlite3")
    aid = begin(journal)
    with pytest.raises(UsageError, match="is open: only a failed one can be retried"):
        retry(journal, aid)
    journal.mark_released(aid, STARTED)
    journal.mark_failed(aid)
    assert journal.held.failed_count() == 1
    retry(journal, aid)
    assert journal.state(aid) is AssociationState.RELEASED
    assert journal.held.failed_count() == 0
