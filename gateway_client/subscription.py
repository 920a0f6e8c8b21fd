"""A consumer's events, one at a time, each settled once (ack, reject, requeue): what
:meth:`gateway_client.client.PipelineClient.subscribe` (association events) and
:meth:`~gateway_client.client.PipelineClient.subscribe_studies` (stable-study events) hand out.
An event whose instances are in a manifest is handed out with them listed (its reader is the
client's)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Generic, Self, TypeVar

from cloudevents.core.v1.event import CloudEvent

from contracts.cloudevent import parse_event
from contracts.errors import InvalidEvent
from contracts.events import AssociationReleased
from contracts.studies import StudyStable
from gateway.bus import Delivery
from gateway.errors import ObjectMissing, StorageUnavailable
from gateway_client.transport import Inbox

log = logging.getLogger(__name__)

#: How soon an event whose manifest could not be read (storage down) is delivered again.
MANIFEST_RETRY_SECONDS: Final = 5.0

#: The events a subscription hands out: association-released or stable-study.
E = TypeVar("E", AssociationReleased, StudyStable)


@dataclass(frozen=True)
class Received(Generic[E]):
    """One event, to be settled exactly once.

    Settling it once the bus is gone (the connection broke, the client was closed) raises
    :class:`~gateway_client.errors.BrokerUnavailable`; the event is then delivered again.
    """

    event: E
    #: The CloudEvent id: the association id, or one per (study, revision).
    event_id: str
    #: Delivered before and not acknowledged then: it may have been processed already.
    redelivered: bool
    _delivery: Delivery

    async def ack(self) -> None:
        """Done with it: it is removed from the consumer's queue."""
        await self._delivery.ack()

    async def reject(self, reason: str) -> None:
        """Never to be processed: it goes to the dead letters (``<consumer>.dead-letter``)."""
        log.warning("event %s rejected: %s", self.event_id, reason)
        await self._delivery.dead_letter(reason)

    async def requeue(self, delay_seconds: float = 0.0) -> None:
        """Not now (a dependency is down): delivered again, not before ``delay_seconds``.

        On RabbitMQ the message is held for the delay, counting against the prefetch.
        """
        await self._delivery.requeue(delay_seconds)


class ReceivedAssociation(Received[AssociationReleased]):
    """An association-released event (``event.association_id`` is also ``event_id``)."""


class ReceivedStudy(Received[StudyStable]):
    """A stable-study event: one ``event_id`` per (study, revision)."""


#: What a subscription hands out: :class:`ReceivedAssociation` or :class:`ReceivedStudy`.
R = TypeVar("R", ReceivedAssociation, ReceivedStudy)


class Subscription(Generic[E, R]):
    """A consumer's events, from :meth:`PipelineClient.subscribe` or
    :meth:`~PipelineClient.subscribe_studies`.

    Iterate with ``async for``, or take one with ``await subscription.next()`` (bounded with
    ``asyncio.timeout``); close it when done. Messages that are not valid events of the kind
    subscribed to are rejected to the dead letters with the reason in the log, and skipped.
    """

    def __init__(
        self,
        consumer: str,
        inbox: Inbox,
        read: Callable[[CloudEvent], E],
        listed: Callable[[E], Awaitable[E]],
        received: Callable[[E, str, bool, Delivery], R],
    ) -> None:
        self.consumer = consumer
        self._inbox = inbox
        self._read: Callable[[CloudEvent], E] = read
        self._listed: Callable[[E], Awaitable[E]] = listed
        self._received: Callable[[E, str, bool, Delivery], R] = received

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> R:
        return await self.next()

    async def next(self) -> R:
        """Wait for the next event, its instances listed (a manifest read).

        A manifest the store cannot give now (StorageUnavailable) puts the event back, to be
        delivered again in a few seconds, and raises.
        """
        while True:
            taken = await self._inbox.take()
            delivery = taken.delivery
            try:
                cloud_event = parse_event(
                    delivery.body,
                    content_type=delivery.content_type,
                    headers=dict(delivery.headers),
                )
                event = await self._listed(self._read(cloud_event))
            except StorageUnavailable:
                await delivery.requeue(MANIFEST_RETRY_SECONDS)
                raise
            except (InvalidEvent, ObjectMissing) as exc:
                log.error(
                    "%s: message %s is not a readable event, dead-lettered: %s",
                    self.consumer,
                    delivery.message_id or "(no message id)",
                    exc,
                )
                await delivery.dead_letter(str(exc))
                continue
            return self._received(event, cloud_event.get_id(), taken.redelivered, delivery)

    async def close(self) -> None:
        """Stop consuming; events taken and not settled are delivered again later."""
        await self._inbox.close()
