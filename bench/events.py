"""Watching the event bus: when did a message arrive, and what was it?

A :class:`Bus` is opened with a topic binding before anything is sent, records every matching
message with the monotonic time it reached this process, and can publish. Two transports:

- :class:`AmqpBus`: an exclusive, auto-deleted queue bound to the exchange (declared here
  the way the gateway declares it), consumed by a thread running its own asyncio loop;
- :class:`LocalLogBus`: the embedded SQLite event log, read by a thread every
  :data:`LOCAL_POLL_SECONDS` from the last event that was there when it was opened.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)

from contracts import (
    CONTENT_TYPE_STRUCTURED,
    AssociationReleased,
    association_released_from_event,
    parse_event,
)
from contracts.routing import topic_matches
from gateway.eventlog import EventLog

#: How often the local event log is read: the resolution of the latencies measured on it.
LOCAL_POLL_SECONDS = 0.005


@dataclass(frozen=True)
class Message:
    arrived: float  # time.monotonic() when this process saw it
    routing_key: str
    body: bytes
    content_type: str | None
    headers: dict[str, Any] = field(default_factory=dict)

    def association_released(self) -> AssociationReleased:
        event = parse_event(self.body, content_type=self.content_type, headers=self.headers)
        return association_released_from_event(event)


class Bus:
    """Messages matching one binding, as they arrive (see the module docstring)."""

    def __init__(self) -> None:
        self._messages: list[Message] = []
        self._changed = threading.Condition()
        self._failure: BaseException | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    def publish(self, routing_key: str, body: bytes, message_id: str) -> None:
        """Publish a structured-mode CloudEvent; durable (confirmed) on return."""
        raise NotImplementedError

    def _record(self, message: Message) -> None:
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()

    def _fail(self, failure: BaseException) -> None:
        with self._changed:
            self._failure = failure
            self._changed.notify_all()

    def wait_for(
        self, enough: Callable[[list[Message]], bool], timeout: float, what: str
    ) -> list[Message]:
        """Every message so far, once ``enough`` of them are there; TimeoutError after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not enough(self._messages):
                if self._failure is not None:
                    raise RuntimeError(f"watching the event bus failed: {self._failure}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{what}: not within {timeout:g} s")
                self._changed.wait(remaining)
            return list(self._messages)

    def wait_for_count(self, count: int, timeout: float, what: str) -> list[Message]:
        return self.wait_for(lambda messages: len(messages) >= count, timeout, what)

    def count(self) -> int:
        """Messages so far."""
        with self._changed:
            return len(self._messages)


class LocalLogBus(Bus):
    def __init__(self, path: Path, binding: str) -> None:
        super().__init__()
        self._binding = binding
        self._log = EventLog.open(path)
        self._seen = self._log.last_seq()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bench-event-log", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        try:
            while not self._stop.is_set():
                for logged in self._log.read(after=self._seen):
                    self._seen = logged.seq
                    if topic_matches(self._binding, logged.routing_key):
                        self._record(
                            Message(
                                time.monotonic(),
                                logged.routing_key,
                                logged.body,
                                logged.content_type,
                                dict(logged.headers),
                            )
                        )
                self._stop.wait(LOCAL_POLL_SECONDS)
        except Exception as exc:  # noqa: BLE001 (handed to the waiting thread)
            self._fail(exc)

    def publish(self, routing_key: str, body: bytes, message_id: str) -> None:
        self._log.append(
            routing_key, body, message_id=message_id, content_type=CONTENT_TYPE_STRUCTURED
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._log.close()


class AmqpBus(Bus):
    def __init__(self, url: str, exchange: str, binding: str, timeout: float = 30.0) -> None:
        super().__init__()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bench-amqp", daemon=True
        )
        self._thread.start()
        self._timeout = timeout
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        try:
            self._call(self._open(url, exchange, binding))
        except BaseException:
            self.close()
            raise

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(self._timeout)

    async def _open(self, url: str, exchange_name: str, binding: str) -> None:
        self._connection = await aio_pika.connect(
            url, client_properties={"connection_name": "dicom-gateway bench"}
        )
        self._channel = await self._connection.channel()
        self._exchange = await self._channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self._exchange, binding)
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._record(
            Message(
                time.monotonic(),
                message.routing_key or "",
                message.body,
                message.content_type,
                dict(message.headers or {}),
            )
        )

    def publish(self, routing_key: str, body: bytes, message_id: str) -> None:
        self._call(self._publish(routing_key, body, message_id))

    async def _publish(self, routing_key: str, body: bytes, message_id: str) -> None:
        assert self._exchange is not None
        await self._exchange.publish(
            aio_pika.Message(
                body,
                content_type=CONTENT_TYPE_STRUCTURED,
                message_id=message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key,
        )

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._call(self._connection.close())
            finally:
                self._connection = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
