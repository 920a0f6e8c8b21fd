"""The relay's shutdown flush publishes what is pending even though the relay was stopped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from contracts.keys import new_association_id
from gateway.bus import Publisher
from gateway.errors import EventUnroutable
from gateway.metrics import IngestMetrics
from ingest.journal import AssociationRecord, Journal
from ingest.outbox import OutboxEvent
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
    journal = Journal.open(tmp_path / "journal.sqlite3")
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
