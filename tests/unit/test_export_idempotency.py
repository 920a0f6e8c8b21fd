"""``export_id`` as an idempotency key: which requests count as the same, what a conflicting
one is answered with, and the ledger that remembers which request an id belongs to."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts.cloudevent import (
    CONFLICTING_REQUEST,
    CONTENT_TYPE_STRUCTURED,
    export_completed_event,
    export_completed_event_id,
    export_completed_from_event,
    export_conflict_event_id,
    parse_event,
    to_structured,
)
from contracts.errors import InvalidEvent
from contracts.export import ExportRequested, ExportStatus, InstanceOutcome
from contracts.keys import association_prefix, object_key
from export.idempotency import conflict_completion, request_digest
from export.ledger import Ledger, RecordedCompletion

ASSOCIATION = "0b1c2d3e-4f50-4617-8899-aabbccddeeff"
KEY = object_key(ASSOCIATION, "1.2.3", "1.2.3.4", "1.2.3.4.5")
OTHER_KEY = object_key(ASSOCIATION, "1.2.3", "1.2.3.4", "1.2.3.4.6")
FIRST = ExportRequested(export_id="e-1", destinations=("pacs",), object_keys=(KEY,))


@pytest.mark.parametrize(
    ("other", "same"),
    [
        pytest.param(FIRST.model_copy(), True, id="a-redelivery"),
        pytest.param(ExportRequested.model_validate(FIRST.model_dump()), True, id="re-parsed"),
        pytest.param(FIRST.model_copy(update={"object_keys": (OTHER_KEY,)}), False, id="keys"),
        pytest.param(FIRST.model_copy(update={"destinations": ("ai",)}), False, id="destination"),
        pytest.param(
            FIRST.model_copy(update={"reply_routing_key": "mine"}), False, id="reply-routing-key"
        ),
        pytest.param(FIRST.model_copy(update={"correlation": {"job": 2}}), False, id="correlation"),
    ],
)
def test_a_request_is_the_same_only_when_everything_it_asks_is(
    other: ExportRequested, same: bool
) -> None:
    assert (request_digest(other) == request_digest(FIRST)) is same


@pytest.mark.parametrize(
    ("refused", "keys"),
    [
        pytest.param(FIRST, [KEY], id="object-keys"),
        pytest.param(
            ExportRequested(export_id="e-1", destinations=("a", "b"), association_id=ASSOCIATION),
            [association_prefix(ASSOCIATION)],
            id="association",
        ),
    ],
)
def test_a_conflicting_request_fails_everywhere_naming_the_conflict(
    refused: ExportRequested, keys: list[str]
) -> None:
    first_finished = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    done = conflict_completion(refused, first_finished, datetime.now(UTC))
    assert done.status is ExportStatus.FAILED
    assert [d.name for d in done.destinations] == list(refused.destinations)
    for destination in done.destinations:
        assert [i.object_key for i in destination.instances] == keys
        for instance in destination.instances:
            assert instance.status is InstanceOutcome.FAILED
            assert instance.error is not None
            assert "export_id e-1 was already used by a different request" in instance.error
            assert first_finished.isoformat() in instance.error


def test_a_conflict_has_an_event_id_of_its_own() -> None:
    digest = request_digest(FIRST)
    assert export_conflict_event_id("e-1", digest) == export_conflict_event_id("e-1", digest)
    assert export_conflict_event_id("e-1", digest) != export_completed_event_id("e-1")
    assert export_conflict_event_id("e-1", digest) != export_conflict_event_id("e-1", "0" * 64)


def test_the_ledger_remembers_which_request_an_export_id_belongs_to(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    finished = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    try:
        ledger.record(RecordedCompletion("e-1", "rk", "id", b"{}", "ab" * 32), finished)
        recorded = ledger.completion("e-1")
    finally:
        ledger.close()
    assert recorded == RecordedCompletion("e-1", "rk", "id", b"{}", "ab" * 32, finished)


def test_a_ledger_of_an_earlier_version_gains_the_request_digest(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE completed (export_id TEXT PRIMARY KEY, routing_key TEXT NOT NULL,"
            " event_id TEXT NOT NULL, body BLOB NOT NULL, finished_at TEXT NOT NULL)"
        )
        old.execute(
            "INSERT INTO completed VALUES ('e-0', 'rk', 'id', x'7b7d', '2026-01-02T03:04:05+00:00')"
        )
    old.close()
    ledger = Ledger.open(path)
    try:
        recorded = ledger.completion("e-0")
    finally:
        ledger.close()
    assert recorded is not None
    assert recorded.request_sha256 is None  # any request with that id counts as the same


def _conflict_event_body(digest: str) -> bytes:
    now = datetime.now(UTC)
    refusal = conflict_completion(FIRST, now, now)
    event = export_completed_event(
        refusal, source="dicom-gateway://tests/export", time=now, conflicting_request=digest
    )
    return to_structured(event)


def test_a_conflict_completion_is_a_valid_completion_event() -> None:
    digest = request_digest(FIRST)
    event = parse_event(
        _conflict_event_body(digest), content_type=CONTENT_TYPE_STRUCTURED, headers={}
    )
    assert event.get_id() == export_conflict_event_id("e-1", digest)
    assert event.get_extension(CONFLICTING_REQUEST) == digest
    assert export_completed_from_event(event).status is ExportStatus.FAILED


def test_a_completion_whose_id_does_not_follow_from_its_conflict_is_invalid() -> None:
    body = json.loads(_conflict_event_body(request_digest(FIRST)))
    body[CONFLICTING_REQUEST] = "0" * 64
    event = parse_event(json.dumps(body).encode(), content_type=CONTENT_TYPE_STRUCTURED, headers={})
    with pytest.raises(InvalidEvent, match="is not the completion id"):
        export_completed_from_event(event)
