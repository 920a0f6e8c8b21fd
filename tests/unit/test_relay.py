"""The relay's decisions over a real journal: the shutdown flush, unroutable and refused events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from contracts.keys import new_association_id
from gateway.bus import Publisher
from gateway.errors import EventRefused, EventUnroutable
from gateway.metrics import IngestMetrics
from ingest.journal import AssociationRecord, Journal
from ingest.outbox import (
    REFUSAL_RETRY_SECONDS,
    REFUSALS_BEFORE_SET_ASIDE,
    SET_ASIDE_RETRY_SECONDS,
    OutboxEvent,
)
from ingest.policy import Limits
from ingest.relay import UNROUTED_RETRY_SECONDS, Relay


class RecordingPublisher:
    """Records publishes; stands in for the broker in this unit test of the relay's logic."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, content_type: str
    ) -> None:
        self.published.append((routing_key, message_id))

    async def ensure_ready(self) -> None:
        return None

    async def close(self) -> None:
        return None


def announced(tmp_path: Path) -> tuple[Journal, str]:
    """A journal with one released association whose event waits in the outbox."""
    return announced_in(Journal.open(tmp_path / "journal.sqlite3"))


def announced_in(journal: Journal) -> tuple[Journal, str]:
    """One more released association whose event waits in ``journal``'s outbox."""
    association_id = new_association_id()
    now = datetime.now(UTC)
    journal.begin_association(
        AssociationRecord(association_id, "GATEWAY", "CT01", "127.0.0.1", 4000, "default", now),
        Limits(1),
    )
    journal.mark_released(association_id, now)
    journal.outbox.announce(
        OutboxEvent(association_id, association_id, "association.released.default", "x", b"{}"),
        now,
    )
    return journal, association_id


def drain_stopped(journal: Journal, publisher: Publisher, metrics: IngestMetrics) -> bool:
    async def scenario() -> bool:
        relay = Relay(journal.outbox, publisher, metrics)
        relay.stop()
        return await relay.drain(timeout=5)

    return asyncio.run(scenario())


def test_drain_after_stop_publishes_and_empties_the_outbox(tmp_path: Path) -> None:
    journal, association_id = announced(tmp_path)
    publisher = RecordingPublisher()
    registry = CollectorRegistry()

    assert drain_stopped(journal, publisher, IngestMetrics.register(registry)) is True
    assert publisher.published == [("association.released.default", association_id)]
    assert journal.outbox.depth() == 0
    assert journal.known_associations() == []  # published: nothing of it is left
    assert registry.get_sample_value("dicom_gateway_events_published_total") == 1
    assert registry.get_sample_value("dicom_gateway_event_publish_latency_seconds_count") == 1


class UnroutingPublisher(RecordingPublisher):
    """A broker with no queue bound: every publish comes back."""

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, content_type: str
    ) -> None:
        raise EventUnroutable(f"no queue is bound to {routing_key!r}")


def test_unroutable_event_is_kept_and_offered_again_later(tmp_path: Path) -> None:
    journal, association_id = announced(tmp_path)
    metrics = IngestMetrics.register(CollectorRegistry())

    assert drain_stopped(journal, UnroutingPublisher(), metrics) is False
    assert journal.outbox.depth() == 1
    assert journal.outbox.pending(datetime.now(UTC)) == []
    later = datetime.now(UTC) + timedelta(seconds=UNROUTED_RETRY_SECONDS + 1)
    assert [e.event_id for e in journal.outbox.pending(later)] == [association_id]


def test_a_refused_event_waits_then_is_set_aside_until_the_next_start(tmp_path: Path) -> None:
    journal, association_id = announced(tmp_path)
    outbox = journal.outbox
    now = datetime.now(UTC)
    for refusal, wait in enumerate(REFUSAL_RETRY_SECONDS, start=1):
        assert outbox.refused(association_id, "nack", now) == refusal
        assert outbox.pending(now) == []
        assert [e.event_id for e in outbox.pending(now + timedelta(seconds=wait))] == [
            association_id
        ]
        assert outbox.set_aside_count() == 0
    assert outbox.refused(association_id, "nack", now) == REFUSALS_BEFORE_SET_ASIDE
    assert outbox.set_aside_count() == 1
    assert outbox.pending(now + timedelta(seconds=SET_ASIDE_RETRY_SECONDS - 1)) == []
    assert len(outbox.pending(now + timedelta(seconds=SET_ASIDE_RETRY_SECONDS))) == 1

    assert outbox.offer_set_aside_again() == 1
    assert outbox.set_aside_count() == 0
    assert [e.event_id for e in outbox.pending(now)] == [association_id]
    assert outbox.refused(association_id, "nack", now) == 1  # a fresh series of attempts


def test_a_refused_event_holds_no_later_one_back(tmp_path: Path) -> None:
    journal, refused_id = announced(tmp_path)
    _, later_id = announced_in(journal)

    class RefusingFirst(RecordingPublisher):
        async def publish(
            self, routing_key: str, body: bytes, *, message_id: str, content_type: str
        ) -> None:
            if message_id == refused_id:
                raise EventRefused("negative confirm")
            await super().publish(
                routing_key, body, message_id=message_id, content_type=content_type
            )

    publisher = RefusingFirst()
    metrics = IngestMetrics.register(CollectorRegistry())
    assert not drain_stopped(journal, publisher, metrics)
    assert publisher.published == [("association.released.default", later_id)]
    assert journal.outbox.depth() == 1
