"""The pipeline client: association events in, objects in and out, exports requested.

Usage (RabbitMQ and S3, or the local event log and file storage, as the settings say)::

    from gateway_client import ClientSettings, PipelineClient

    settings = ClientSettings.from_config(Path("gateway.toml"))  # or PipelineClient.from_config
    async with PipelineClient(settings, name="lung") as client:
        async for received in client.associations(pipeline="lung", consumer="lung-nodules"):
            for instance in received.event.instances:
                data = await client.read_object(instance.object_key)
                ...
            await client.write_object(key, part10_bytes)
            export_id = await client.request_export(destination="pacs", object_keys=[key])
            completed = await client.wait_for_completion(export_id, timeout=300)
            await received.ack()

Delivery is at least once: a message that is neither acknowledged nor rejected (the pipeline
crashed, the connection broke) is delivered again, with ``received.redelivered`` set. Process
idempotently: :mod:`gateway_client.keys` gives derived objects keys that depend only on their
source, and a deterministic ``export_id`` makes the export service send an export only once.

:meth:`PipelineClient.subscribe` declares a consumer's queue without waiting for a message, for
a pipeline that must not miss an event published before its first ``async for`` (on RabbitMQ an
event that no queue is bound for is held back by the gateway, not queued).

Failures come out as the exceptions of :mod:`gateway_client.errors` (``BrokerUnavailable``,
``StorageUnavailable``, ``ObjectMissing``, ``EventUnroutable`` when no export service consumes
requests, ``CompletionTimeout``, ``ConfigError``), all ``GatewayError``; invalid arguments raise
:class:`contracts.errors.ContractError`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from pydantic import ValidationError

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    association_released_from_event,
    export_completed_from_event,
    export_requested_event,
    parse_event,
    study_stable_from_event,
    to_structured,
)
from contracts.errors import ContractError, InvalidEvent
from contracts.events import AssociationReleased
from contracts.export import ExportCompleted, ExportRequested
from contracts.keys import MANIFEST_NAME, parse_object_key
from contracts.manifest import Listing, with_manifest_instances
from contracts.routing import (
    ASSOCIATION_RELEASED_BINDING,
    EXPORT_COMPLETED_ROUTING_KEY,
    EXPORT_REQUESTED_ROUTING_KEY,
    STUDY_STABLE_BINDING,
    association_released_routing_key,
    is_valid_pipeline,
    study_stable_routing_key,
)
from contracts.studies import StudyStable
from gateway.backends import open_store
from gateway.objectstore import ObjectStore
from gateway_client.errors import CompletionTimeout
from gateway_client.settings import ClientSettings
from gateway_client.subscription import (
    R,
    ReceivedAssociation,
    ReceivedStudy,
    Subscription,
)
from gateway_client.transport import ReplyListener, Transport, open_transport

log = logging.getLogger(__name__)

#: Namespace of the reply routing keys: the key of export ``E`` requested by client ``N`` is
#: ``export.completed.N.<uuid5(namespace, E)>``, the same each time ``E`` is requested, because
#: the export service re-publishes an earlier completion with its first request's reply key.
REPLY_KEY_NAMESPACE: Final = uuid.UUID("c4a7e2d0-93b1-5f6e-8d24-7b0a1e5c3f98")
#: A consumer's grammar: it names a RabbitMQ queue (and ``<consumer>.dead-letter``) or a
#: subscription of the local event log.
CONSUMER_MAX_LENGTH: Final = 200
_CONSUMER_CHARACTERS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"
)


def is_valid_consumer(name: str) -> bool:
    """Whether ``name`` can name a consumer: 1 to 200 ASCII letters, digits, ``.``, ``_``,
    ``:`` or ``-``."""
    return 0 < len(name) <= CONSUMER_MAX_LENGTH and set(name) <= _CONSUMER_CHARACTERS


def reply_routing_key(client_name: str, export_id: str) -> str:
    """The key the completion of ``export_id`` requested by ``client_name`` comes back with."""
    return (
        f"{EXPORT_COMPLETED_ROUTING_KEY}.{client_name}."
        f"{uuid.uuid5(REPLY_KEY_NAMESPACE, export_id).hex}"
    )


class PipelineClient:
    """A pipeline's connection to the gateway's event bus and object storage.

    ``name`` identifies this client on the bus (RabbitMQ connection names, the ``source`` of
    its export requests, the reply keys of its exports): letters, digits, ``-`` and ``_``.
    Use it as an async context manager; it is not shared between event loops.
    """

    def __init__(self, settings: ClientSettings, *, name: str) -> None:
        if not is_valid_pipeline(name):
            raise ContractError(
                f"{name!r} cannot name a client: 1 to 64 letters, digits, '-' or '_'"
            )
        self.settings = settings
        self.name = name
        self._transport: Transport = open_transport(settings.broker, f"pipeline {name}")
        self._store: ObjectStore = open_store(settings.storage)
        self._subscriptions: list[AnySubscription] = []
        self._replies: dict[str, ReplyListener] = {}

    @classmethod
    def from_config(cls, config_file: Path | None, *, name: str) -> PipelineClient:
        """A client for the gateway configured by ``config_file``, as ``dicom-gateway`` reads
        it: None means ``$GATEWAY_CONFIG``, else the built-in defaults; ``GATEWAY_*``
        variables override the file (see :meth:`ClientSettings.from_config`)."""
        return cls(ClientSettings.from_config(config_file), name=name)

    async def __aenter__(self) -> Self:
        await self._transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every subscription and reply listener, then disconnect."""
        try:
            for subscription in self._subscriptions:
                await subscription.close()
            for listener in self._replies.values():
                await listener.close()
        finally:
            self._subscriptions.clear()
            self._replies.clear()
            await self._transport.close()

    # --- association events -------------------------------------------------------------

    async def subscribe(
        self, *, consumer: str, pipeline: str | None = "default", prefetch: int = 1
    ) -> Subscription[AssociationReleased, ReceivedAssociation]:
        """Declare ``consumer``'s queue for ``pipeline``'s events (every pipeline's when None).

        From this moment on the events are kept for the consumer, whether it is running or
        not. ``prefetch`` is how many events it may hold unsettled at once.
        """
        _check_subscription(consumer, prefetch)
        binding = (
            ASSOCIATION_RELEASED_BINDING
            if pipeline is None
            else association_released_routing_key(pipeline)
        )
        inbox = await self._transport.consume(consumer, binding, prefetch)
        subscription = Subscription(
            consumer,
            inbox,
            association_released_from_event,
            self._with_instances,
            ReceivedAssociation,
        )
        self._subscriptions.append(subscription)
        return subscription

    async def subscribe_studies(
        self, *, consumer: str, pipeline: str | None = "default", prefetch: int = 1
    ) -> Subscription[StudyStable, ReceivedStudy]:
        """As :meth:`subscribe`, for ``pipeline``'s stable-study events (every pipeline's when
        None): a study's instances across associations, once it was quiet for the called AE
        title's ``study_stable_seconds``. ``consumer`` names a queue of its own: use another
        name than for association events."""
        _check_subscription(consumer, prefetch)
        binding = STUDY_STABLE_BINDING if pipeline is None else study_stable_routing_key(pipeline)
        inbox = await self._transport.consume(consumer, binding, prefetch)
        subscription = Subscription(
            consumer, inbox, study_stable_from_event, self._with_instances, ReceivedStudy
        )
        self._subscriptions.append(subscription)
        return subscription

    async def associations(
        self, *, consumer: str, pipeline: str | None = "default", prefetch: int = 1
    ) -> AsyncGenerator[ReceivedAssociation, None]:
        """Subscribe (see :meth:`subscribe`) and yield the events as they come, forever.

        Leaving the ``async for`` early closes the subscription when the generator is closed:
        wrap it in :func:`contextlib.aclosing` to make that immediate, or let the client's
        ``async with`` close it.
        """
        subscription = await self.subscribe(consumer=consumer, pipeline=pipeline, prefetch=prefetch)
        async for received in self._each(subscription):
            yield received

    async def studies(
        self, *, consumer: str, pipeline: str | None = "default", prefetch: int = 1
    ) -> AsyncGenerator[ReceivedStudy, None]:
        """As :meth:`associations`, for stable-study events (see :meth:`subscribe_studies`)."""
        subscription = await self.subscribe_studies(
            consumer=consumer, pipeline=pipeline, prefetch=prefetch
        )
        async for received in self._each(subscription):
            yield received

    async def _each(self, subscription: Subscription[Any, R]) -> AsyncGenerator[R, None]:
        try:
            async for received in subscription:
                yield received
        finally:
            # The client may have closed it already, when it was closed first.
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
                await subscription.close()

    async def _with_instances(self, event: Listing) -> Listing:
        """``event`` with its instances listed: read from its manifest when it has one."""
        if event.manifest is None or event.instances:
            return event
        with tempfile.TemporaryDirectory(prefix="gateway-client-") as directory:
            target = Path(directory) / MANIFEST_NAME
            await self.download(event.manifest.object_key, target)
            return await asyncio.to_thread(_read_manifest, event, target)

    # --- objects ------------------------------------------------------------------------

    async def read_object(self, key: str) -> bytes:
        """The stored object ``key`` (a whole Part 10 file) in memory; see :meth:`download`."""
        with tempfile.TemporaryDirectory(prefix="gateway-client-") as directory:
            target = Path(directory) / "object.dcm"
            await self.download(key, target)
            return await asyncio.to_thread(target.read_bytes)

    async def download(self, key: str, target: Path) -> None:
        """Stream the stored object ``key`` to the file ``target`` (for large objects)."""
        await asyncio.to_thread(self._store.download, key, target)

    async def write_object(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``; returns once it is durable.

        ``key`` must follow the layout of :mod:`contracts.keys` (export accepts nothing else);
        :func:`gateway_client.keys.derived_object_key` makes one for a derived object.
        """
        parse_object_key(key)
        await asyncio.to_thread(self._store.put, key, io.BytesIO(data), len(data))

    async def keys(self, prefix: str) -> list[str]:
        """Every stored key under ``prefix``, sorted."""
        return await asyncio.to_thread(self._store.keys, prefix)

    # --- exports ------------------------------------------------------------------------

    async def request_export(
        self,
        *,
        destination: str | Sequence[str],
        association_id: str | None = None,
        object_keys: Sequence[str] | None = None,
        export_id: str | None = None,
        correlation: Mapping[str, Any] | None = None,
    ) -> str:
        """Ask the export service to send objects to configured destinations; returns the
        export id, for :meth:`wait_for_completion`.

        Give exactly one of ``association_id`` (everything stored under it) and
        ``object_keys``. ``export_id`` is the idempotency key (a new UUID when None): a request
        for an export that was completed before is not sent again, its completion is
        published again. The reply key is listened on before the request is published, so the
        completion cannot be missed.
        """
        destinations = (destination,) if isinstance(destination, str) else tuple(destination)
        export_id = export_id or str(uuid.uuid4())
        try:
            request = ExportRequested(
                export_id=export_id,
                destinations=destinations,
                association_id=association_id,
                object_keys=None if object_keys is None else tuple(object_keys),
                reply_routing_key=reply_routing_key(self.name, export_id),
                correlation=None if correlation is None else dict(correlation),
            )
        except ValidationError as exc:
            raise ContractError(f"invalid export request: {exc}") from exc
        event = export_requested_event(
            request, source=f"dicom-gateway-client://{self.name}", time=datetime.now(UTC)
        )
        assert request.reply_routing_key is not None  # set just above
        if export_id not in self._replies:
            self._replies[export_id] = await self._transport.listen(request.reply_routing_key)
        await self._transport.publish(
            EXPORT_REQUESTED_ROUTING_KEY,
            to_structured(event),
            message_id=str(event.get_id()),
            content_type=CONTENT_TYPE_STRUCTURED,
        )
        log.info("export %s requested: %s", export_id, ", ".join(destinations))
        return export_id

    async def wait_for_completion(self, export_id: str, timeout: float) -> ExportCompleted:
        """The completion of an export this client requested.

        Raises :class:`CompletionTimeout` after ``timeout`` seconds; the export goes on, and
        waiting again can still get its completion.
        """
        listener = self._replies.get(export_id)
        if listener is None:
            raise ContractError(f"export {export_id!r} was not requested by this client")
        try:
            async with asyncio.timeout(timeout):
                completed = await _completion(listener, export_id)
        except TimeoutError:
            raise CompletionTimeout(
                f"no completion for export {export_id} within {timeout:g} s"
            ) from None
        del self._replies[export_id]
        await listener.close()
        return completed


#: A subscription to either kind of event (both are closed with the client).
AnySubscription = (
    Subscription[AssociationReleased, ReceivedAssociation]
    | Subscription[StudyStable, ReceivedStudy]
)


def _check_subscription(consumer: str, prefetch: int) -> None:
    if not is_valid_consumer(consumer):
        raise ContractError(
            f"{consumer!r} cannot name a consumer: 1 to {CONSUMER_MAX_LENGTH} letters, "
            "digits, '.', '_', ':' or '-'"
        )
    if prefetch < 1:
        raise ContractError(f"prefetch must be at least 1, not {prefetch}")


def _read_manifest(event: Listing, path: Path) -> Listing:
    with path.open("rb") as lines:
        return with_manifest_instances(event, lines)


async def _completion(listener: ReplyListener, export_id: str) -> ExportCompleted:
    while True:
        reply = await listener.receive()
        try:
            completed = export_completed_from_event(
                parse_event(reply.body, content_type=reply.content_type, headers=reply.headers)
            )
        except InvalidEvent as exc:
            log.warning("ignored a message on %s: %s", reply.routing_key, exc)
            continue
        if completed.export_id == export_id:
            return completed
