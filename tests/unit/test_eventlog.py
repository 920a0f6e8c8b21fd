"""The local event log: topic routing, delivery states, redelivery, retention."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.eventlog import EventLog


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    opened = EventLog.open(tmp_path / "events.sqlite3")
    yield opened
    opened.close()


def append(log: EventLog, key: str, n: int) -> int:
    return log.append(key, f"body {n}".encode(), message_id=f"m{n}", content_type="text/plain")


def test_read_returns_events_in_order_after_a_sequence_number(log: EventLog) -> None:
    first = append(log, "a.b", 1)
    append(log, "a.c", 2)
    assert [e.message_id for e in log.read(after=0)] == ["m1", "m2"]
    assert [e.message_id for e in log.read(after=first)] == ["m2"]
    assert log.last_seq() == first + 1


def test_a_subscription_gets_what_its_binding_routes_including_earlier_events(
    log: EventLog,
) -> None:
    append(log, "export.requested", 1)
    append(log, "association.released.default", 2)
    log.subscribe("export", "export.requested")
    append(log, "export.requested", 3)
    claimed = log.claim("export", limit=10)
    assert [c.event.message_id for c in claimed] == ["m1", "m3"]
    assert [c.attempts for c in claimed] == [1, 1]
    assert log.claim("export", limit=10) == []  # taken, not handed out twice


def test_claim_respects_the_limit(log: EventLog) -> None:
    log.subscribe("s", "#")
    for n in range(5):
        append(log, "k", n)
    assert len(log.claim("s", limit=2)) == 2
    assert len(log.claim("s", limit=10)) == 3


def test_ack_requeue_and_dead_letter(log: EventLog) -> None:
    log.subscribe("s", "#")
    for n in range(3):
        append(log, "k", n)
    first, second, third = log.claim("s", limit=3)
    log.ack("s", first.event.seq)
    log.requeue("s", second.event.seq)
    log.dead_letter("s", third.event.seq, "not a CloudEvent")
    (again,) = log.claim("s", limit=3)
    assert (again.event.message_id, again.attempts) == ("m1", 2)
    assert [(e.message_id, why) for e, why in log.dead_letters("s")] == [("m2", "not a CloudEvent")]


def test_a_delayed_requeue_is_not_handed_out_early(log: EventLog) -> None:
    log.subscribe("s", "#")
    append(log, "k", 1)
    (claimed,) = log.claim("s", limit=1)
    log.requeue("s", claimed.event.seq, delay_seconds=60)
    assert log.claim("s", limit=1) == []


def test_taken_work_of_a_stopped_consumer_is_handed_out_again(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    crashed = EventLog.open(path)
    crashed.subscribe("s", "#")
    append(crashed, "k", 1)
    assert len(crashed.claim("s", limit=1)) == 1
    crashed.close()  # never acknowledged

    restarted = EventLog.open(path)
    restarted.subscribe("s", "#")
    (again,) = restarted.claim("s", limit=1)
    assert (again.event.message_id, again.attempts) == ("m1", 2)
    restarted.close()


def test_headers_and_content_type_are_kept(log: EventLog) -> None:
    log.append("k", b"{}", message_id="m", content_type="application/json", headers={"ce_id": "x"})
    (event,) = log.read(after=0)
    assert (event.content_type, dict(event.headers)) == ("application/json", {"ce_id": "x"})


def test_prune_keeps_what_a_subscriber_still_has_to_settle(log: EventLog) -> None:
    log.subscribe("s", "wanted")
    append(log, "wanted", 1)
    append(log, "other", 2)
    log.claim("s", limit=10)  # m1 taken, not settled
    removed = log.prune(older_than=datetime.now(UTC) + timedelta(seconds=1))
    assert removed == 1
    assert [e.message_id for e in log.read(after=0)] == ["m1"]


def test_prune_keeps_events_no_subscriber_has_looked_at_yet(log: EventLog) -> None:
    log.subscribe("s", "#")
    append(log, "k", 1)
    assert log.prune(older_than=datetime.now(UTC) + timedelta(seconds=1)) == 0
