"""The local event log (the embedded bus) seen from a test, like :mod:`tests.support.amqp` sees
RabbitMQ: :class:`LocalEventCollector` gathers what is appended to the log from ``__enter__`` on
and that its binding keys route, with the same interface as
:class:`~tests.support.amqp.EventCollector`, so a test reads the same on both buses.

Its :meth:`~LocalEventCollector.catch_up` notes the log's last sequence number and waits until
the collector has read that far: an append is durable when it returns, so everything appended
before the call is then collected. :func:`logged` reads the whole log at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from contracts.routing import topic_matches
from gateway.eventlog import EventLog, LoggedEvent
from tests.support.amqp import MessageBuffer, ReceivedMessage

#: How often the collector reads the log.
POLL_SECONDS = 0.05
#: The log keeps every event, as RabbitMQ keeps persistent messages; report them the same way.
PERSISTENT = 2


def received(event: LoggedEvent) -> ReceivedMessage:
    return ReceivedMessage(
        body=event.body,
        routing_key=event.routing_key,
        headers=dict(event.headers),
        content_type=event.content_type,
        message_id=event.message_id,
        delivery_mode=PERSISTENT,
    )


def logged(db: sqlite3.Connection, binding_keys: Sequence[str] = ("#",)) -> list[LoggedEvent]:
    """Every event in the log open as ``db`` that ``binding_keys`` route, oldest first (a
    connection of :func:`tests.support.power_cuts.read_only` leaves the log's files as they
    are)."""
    log = EventLog(db, retention=timedelta.max)  # retention: only an append prunes
    events: list[LoggedEvent] = []
    while page := log.read(after=events[-1].seq if events else 0):
        events += page
    return [e for e in events if any(topic_matches(key, e.routing_key) for key in binding_keys)]


class LocalEventCollector(MessageBuffer):
    def __init__(self, path: Path, binding_keys: Sequence[str] = ("#",)) -> None:
        super().__init__(f"{path} {list(binding_keys)}")
        self.path = path
        self.binding_keys = tuple(binding_keys)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-collector", daemon=True)
        self._log: EventLog | None = None
        self._after = 0  # the last sequence number read; guarded by _progress
        self._progress = threading.Condition()

    def __enter__(self) -> LocalEventCollector:
        self._log = EventLog.open(self.path)
        self._after = self._log.last_seq()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._log is not None:
            self._log.close()

    def catch_up(self, timeout: float) -> None:
        if self._log is None:
            raise RuntimeError("the collector is not open")
        target = self._log.last_seq()
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._after < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"the collector did not read {self.path} up to event {target} "
                        f"within {timeout:g} s"
                    )
                self._progress.wait(remaining)

    def _run(self) -> None:
        assert self._log is not None
        while not self._stop.wait(POLL_SECONDS):
            for event in self._log.read(after=self._after):
                if any(topic_matches(key, event.routing_key) for key in self.binding_keys):
                    self.add(received(event))
                with self._progress:
                    self._after = event.seq
                    self._progress.notify_all()
