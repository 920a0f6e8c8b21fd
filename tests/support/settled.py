"""States in which a service has published everything it ever will for what a test did.

A test that shows that something was *not* published waits for one of these states and then
calls :meth:`~tests.support.amqp.MessageBuffer.assert_no_more`, instead of waiting out a fixed
quiet window that is either too long (slow) or too short (proves nothing):

* ingest has **handed on** everything once its journal holds no association, instance or event:
  a released association is forgotten only after its event was published (and confirmed), an
  aborted one once its files are gone, so nothing is left that could still be published;
* export has **nothing left** once the process has stopped and its request queue (or the local
  event log's subscription) holds no request: every completion it published was confirmed
  before its request was acknowledged, and what it had not finished would be back in the queue.

Both read the services' state from outside (white-box, read-only).
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Protocol

import aio_pika

from contracts.routing import EXPORT_REQUESTED_ROUTING_KEY, topic_matches
from gateway.eventlog import DEAD
from tests.support.amqp import MessageBuffer
from tests.support.net import wait_until

#: ingest's journal, in its spool directory.
JOURNAL = "journal.sqlite3"


def journal_rows(spool_dir: Path) -> int:
    """Rows left in ingest's journal (associations, instances and outbox events)."""
    journal = spool_dir / JOURNAL
    with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)) as db:
        return sum(
            int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
            for table in ("associations", "instances", "outbox")
        )


def studies_waiting(spool_dir: Path) -> int:
    """Studies in ingest's journal waiting for their quiet time to announce them as stable."""
    journal = spool_dir / JOURNAL
    with closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)) as db:
        return int(
            db.execute("SELECT COUNT(*) FROM studies WHERE due_at IS NOT NULL").fetchone()[0]
        )


def wait_until_handed_on(spool_dir: Path, timeout: float = 30.0) -> None:
    """Wait until ingest has published or discarded every association it recorded."""
    wait_until(
        lambda: journal_rows(spool_dir) == 0,
        timeout,
        "ingest's journal is empty (every association handed on or discarded)",
    )


class Bus(Protocol):
    """Where a test's export requests are (the ``Ingest`` harness is one)."""

    @property
    def embedded(self) -> bool: ...
    @property
    def amqp_url(self) -> str: ...
    @property
    def event_log(self) -> Path: ...


class Stoppable(Protocol):
    def terminate(self, timeout: float = ...) -> int: ...


def requests_left(bus: Bus, queue: str, timeout: float = 10.0) -> int:
    """Requests in export's queue (ready, or taken and not settled) once it has no consumer.

    Call it after the export process has stopped: RabbitMQ then puts back what the process had
    taken and not acknowledged, which it does when it drops the consumer.
    """
    if bus.embedded:
        return _subscription_left(bus.event_log, queue)
    return asyncio.run(_queue_left(bus.amqp_url, queue, timeout))


def stop_export_with_nothing_left(
    process: Stoppable, bus: Bus, queue: str, completions: MessageBuffer
) -> None:
    """Stop export (SIGTERM, exit 0), then assert that no request is left in its queue and
    that no completion beyond those the test waited for was published."""
    assert process.terminate() == 0
    left = requests_left(bus, queue)
    assert left == 0, f"{left} request(s) left in {queue} after export stopped"
    completions.assert_no_more()


async def _queue_left(amqp_url: str, queue: str, timeout: float) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            declared = await channel.declare_queue(queue, passive=True)
            result = declared.declaration_result
            if result.consumer_count == 0:
                return int(result.message_count or 0)
            if loop.time() >= deadline:
                raise AssertionError(f"{queue} still has a consumer {timeout:g} s after export")
            await asyncio.sleep(0.05)


def _subscription_left(event_log: Path, subscription: str) -> int:
    with closing(sqlite3.connect(f"file:{event_log}?mode=ro", uri=True, timeout=5)) as db:
        (pending,) = db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE subscription = ? AND state != ?",
            (subscription, DEAD),
        ).fetchone()
        row = db.execute(
            "SELECT cursor FROM subscriptions WHERE name = ?", (subscription,)
        ).fetchone()
        # Requests appended after the subscription's last claim are waiting too.
        keys = db.execute(
            "SELECT routing_key FROM events WHERE seq > ?", (row[0] if row else 0,)
        ).fetchall()
    unclaimed = sum(topic_matches(EXPORT_REQUESTED_ROUTING_KEY, key) for (key,) in keys)
    return int(pending) + unclaimed
