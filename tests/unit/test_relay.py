"""The relay's shutdown flush publishes what is pending even though the relay was stopped."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from contracts.keys import new_association_id
from ingest.journal import AssociationRecord, Journal, OutboxEvent
from ingest.relay import Relay


class RecordingPublisher:
    """Records publishes; stands in for the broker in this unit test of the relay's logic."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []

    async def publish(
        self, routing_key: str, body: bytes, *, message_id: str, content_type: str
    ) -> None:
        self.published.append((routing_key, message_id))

    async def close(self) -> None:
        return None


def test_drain_after_stop_publishes_and_empties_the_outbox(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.sqlite3")
    association_id = new_association_id()
    now = datetime.now(UTC)
    journal.begin_association(
        AssociationRecord(association_id, "GATEWAY", "CT01", "127.0.0.1", 4000, "default", now)
    )
    journal.announce(
        OutboxEvent(association_id, association_id, "association.released.default", "x", b"{}"),
        now,
    )
    publisher = RecordingPublisher()

    async def scenario() -> bool:
        relay = Relay(journal, publisher)
        relay.stop()
        return await relay.drain(timeout=5)

    assert asyncio.run(scenario()) is True
    assert publisher.published == [("association.released.default", association_id)]
    assert journal.outbox_depth() == 0
