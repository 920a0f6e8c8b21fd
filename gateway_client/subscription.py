"""A consumer's association events, one at a time, each settled once (ack, reject, requeue):
what :meth:`gateway_client.client.PipelineClient.subscribe` hands out. An event whose instances
are in a manifest is handed out with them listed (its reader is the client's)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Self

from contracts.cloudevent import association_released_from_event, parse_event
from contracts.errors import InvalidEvent
from contracts.events import AssociationReleased
from gateway.bus import Delivery
from gateway.errors import ObjectMissing, StorageUnavailable
from gateway_client.transport import Inbox

log = logging.getLogger(__name__)

#: How soon an event whose manifest could not be read (storage down) is delivered again.
MANIFEST_RETRY_SECONDS: Final = 5.0


@dataclass(frozen=True)
class ReceivedAssociation:
    """One association-released event, to be settled exactly once.

    Settling it once the bus is gone (the connection broke, the client was closed) raises
    :class:`~gateway_client.errors.BrokerUnavailable`; the event is then delivered again.
    """

    event: AssociationReleased
    #: Delivered before and not acknowledged then: it may have been processed already.
    redelivered: bool
    _delivery: Delivery

    async def ack(self) -> None:
        """Done with it: it is removed from the consumer's queue."""
        await self._delivery.ack()

    async def reject(self, reason: str) -> None:
        """Never to be processed: it goes to the dead letters (``<consumer>.dead-letter``)."""
        log.warning("association %s rejected: %s", self.event.association_id, reason)
        await self._delivery.dead_letter(reason)

    async def requeue(self, delay_seconds: float = 0.0) -> None:
        """Not now (a dependency is down): delivered again, not before ``delay_seconds``.

        On RabbitMQ the message is held for the delay, counting against the prefetch.
        """
        await self._delivery.requeue(delay_seconds)


class Subscription:
    """A consumer's association events, from :meth:`PipelineClient.subscribe`.

    Iterate with ``async for``, or take one with ``await subscription.next()`` (bounded with
    ``asyncio.timeout``); close it when done. Messages that are not valid association events are
    rejected to the dead letters with the reason in the log, and skipped.
    """

    def __init__(
        self,
        consumer: str,
        inbox: Inbox,
        listed: Callable[[AssociationReleased], Awaitable[AssociationReleased]],
    ) -> None:
        self.consumer = consumer
        self._inbox = inbox
        self._listed = listed

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ReceivedAssociation:
        return await self.next()

    async def next(self) -> ReceivedAssociation:
        """Wait for the next association event, its instances listed (a manifest read).

        A manifest the store cannot give now (StorageUnavailable) puts the event back, to be
        delivered again in a few seconds, and raises.
        """
        while True:
            taken = await self._inbox.take()
            delivery = taken.delivery
            try:
                released = await self._listed(
                    association_released_from_event(
                        parse_event(
                            delivery.body,
                            content_type=delivery.content_type,
                            headers=dict(delivery.headers),
                        )
                    )
                )
            except StorageUnavailable:
                await delivery.requeue(MANIFEST_RETRY_SECONDS)
                raise
            except (InvalidEvent, ObjectMissing) as exc:
                log.error(
                    "%s: message %s is not a readable association event, dead-lettered: %s",
                    self.consumer,
                    delivery.message_id or "(no message id)",
                    exc,
                )
                await delivery.dead_letter(str(exc))
                continue
            return ReceivedAssociation(released, taken.redelivered, delivery)

    async def close(self) -> None:
        """Stop consuming; events taken and not settled are delivered again later."""
        await self._inbox.close()
