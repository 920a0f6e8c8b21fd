"""What a worker process and its parent say to each other, as types.

The parent starts a worker with a :class:`WorkerStart` on its stdin. The worker then answers
over the socket pair (:mod:`ingest.workers.channel`) with one JSON object per line:

- ``{"ready": true}`` (:class:`Ready`): the worker takes connections.
- ``{"closed": true}`` (:class:`Closed`): a connection it was handed has ended.
- ``{"spooled": ID}`` (:class:`Spooled`): an instance of an association is durable in the
  spool and the journal; the parent uploads it.
- ``{"released": ID}`` (:class:`Released`): an association is released and recorded; the
  parent announces it once it is stored.
- ``{"aborted": ID}`` (:class:`Aborted`): an aborted association whose objects may be in
  storage; the parent removes it.
- ``{"counter": NAME, "labels": [...], "amount": N}`` (:class:`CounterMoved`): one of the
  listener's counters moved.

A message that cannot be built, on either side, raises :class:`WorkerMessageError`: the types
check their own values, so what :func:`encode` writes is what :func:`decode` reads back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar, assert_never

from pydantic import ValidationError

from gateway.errors import WorkerMessageError
from gateway.metrics import LISTENER_COUNTERS
from gateway.settings import GatewaySettings

#: Longer lines are not ours (a counter line is under 200 bytes).
MAX_LINE_BYTES = 4096


@dataclass(frozen=True)
class Ready:
    pass


@dataclass(frozen=True)
class Closed:
    pass


@dataclass(frozen=True)
class _AboutAssociation:
    #: The message's one key on the line.
    key: ClassVar[str]
    association_id: str

    def __post_init__(self) -> None:
        if not isinstance(self.association_id, str) or not self.association_id:
            raise WorkerMessageError(f"{self.key}: {self.association_id!r} is no association id")


@dataclass(frozen=True)
class Spooled(_AboutAssociation):
    key: ClassVar[str] = "spooled"


@dataclass(frozen=True)
class Released(_AboutAssociation):
    key: ClassVar[str] = "released"


@dataclass(frozen=True)
class Aborted(_AboutAssociation):
    key: ClassVar[str] = "aborted"


_ABOUT_ASSOCIATION: dict[str, type[Spooled] | type[Released] | type[Aborted]] = {
    kind.key: kind for kind in (Spooled, Released, Aborted)
}


@dataclass(frozen=True)
class CounterMoved:
    counter: str
    labels: tuple[str, ...]
    amount: float

    def __post_init__(self) -> None:
        # The parent looks the counter up by name: only the listener's may be named.
        if self.counter not in LISTENER_COUNTERS:
            raise WorkerMessageError(f"counter {self.counter!r} is not one of the listener's")
        if not all(isinstance(label, str) for label in self.labels):
            raise WorkerMessageError(f"counter {self.counter}: labels {self.labels!r} not text")
        if (
            not isinstance(self.amount, int | float)
            or isinstance(self.amount, bool)
            or not self.amount >= 0
        ):
            raise WorkerMessageError(f"counter {self.counter}: amount {self.amount!r}")


Message = Ready | Closed | Spooled | Released | Aborted | CounterMoved


def encode(message: Message) -> bytes:
    """One line, newline included."""
    document: dict[str, object]
    match message:
        case Ready():
            document = {"ready": True}
        case Closed():
            document = {"closed": True}
        case Spooled(association_id) | Released(association_id) | Aborted(association_id):
            document = {message.key: association_id}
        case CounterMoved(counter, labels, amount):
            document = {"counter": counter, "labels": list(labels), "amount": amount}
        case _:
            assert_never(message)
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    """One line back into its message; raises :class:`WorkerMessageError` saying what is wrong."""
    if len(line) > MAX_LINE_BYTES:
        raise WorkerMessageError(f"a line of {len(line)} bytes")
    try:
        document = json.loads(line)
    except ValueError as exc:  # not UTF-8 either
        raise WorkerMessageError(f"not JSON: {line[:200]!r}") from exc
    keys = set(document) if isinstance(document, dict) else set()
    if keys == {"ready"} and document["ready"] is True:
        return Ready()
    if keys == {"closed"} and document["closed"] is True:
        return Closed()
    if len(keys) == 1 and (key := next(iter(keys))) in _ABOUT_ASSOCIATION:
        return _ABOUT_ASSOCIATION[key](document[key])
    if keys == {"counter", "labels", "amount"} and isinstance(document["labels"], list):
        return CounterMoved(document["counter"], tuple(document["labels"]), document["amount"])
    raise WorkerMessageError(f"not a message: {line[:200]!r}")


@dataclass(frozen=True)
class WorkerStart:
    """What the parent writes to a worker's stdin: everything it needs before it can listen."""

    #: The parent's settings, built once (a worker reads no file and no environment).
    settings: GatewaySettings
    log_level: str
    #: The worker's end of the socket pair, an inherited descriptor.
    channel_fd: int

    def encode(self) -> bytes:
        return json.dumps(
            {
                "settings": self.settings.model_dump(mode="json"),
                "log_level": self.log_level,
                "channel_fd": self.channel_fd,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> WorkerStart:
        """Raises :class:`WorkerMessageError` saying what is wrong."""
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise WorkerMessageError(f"start-up document is not JSON: {exc}") from exc
        if not isinstance(document, dict) or set(document) != {
            "settings",
            "log_level",
            "channel_fd",
        }:
            raise WorkerMessageError("start-up document without settings, log level and channel")
        log_level, channel_fd = document["log_level"], document["channel_fd"]
        if not isinstance(log_level, str):
            raise WorkerMessageError(f"start-up document: log level {log_level!r}")
        if not isinstance(channel_fd, int) or isinstance(channel_fd, bool) or channel_fd < 0:
            raise WorkerMessageError(f"start-up document: channel descriptor {channel_fd!r}")
        try:
            settings = GatewaySettings.model_validate(document["settings"])
        except ValidationError as exc:
            raise WorkerMessageError(f"start-up document: settings: {exc}") from exc
        return cls(settings, log_level, channel_fd)
