"""The gateway's events as CloudEvents 1.0, and reading CloudEvents off the broker.

The association-released event and the export request and completion are built here from their
data models and read back into them. The gateway publishes in structured mode
(:func:`to_structured`, content type :data:`CONTENT_TYPE_STRUCTURED`). :func:`parse_event` also
reads binary mode as written by the cloudevents library's RabbitMQ binding (``ce-`` headers) and
AMQP binding (``cloudEvents_`` or ``cloudEvents:`` application properties), so pipelines may
republish either way.
"""

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, TypeVar, cast
from urllib.parse import quote

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import amqp, rabbitmq
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.spec import SPECVERSION_V1_0
from cloudevents.core.v1.event import REQUIRED_ATTRIBUTES, CloudEvent
from pydantic import BaseModel, ValidationError

from contracts.errors import ContractError, InvalidEvent
from contracts.events import ASSOCIATION_RELEASED_TYPE, AssociationReleased
from contracts.export import (
    EXPORT_COMPLETED_TYPE,
    EXPORT_REQUESTED_TYPE,
    ExportCompleted,
    ExportRequested,
)
from contracts.studies import STUDY_STABLE_TYPE, StudyStable

#: Content type of a structured-mode message body in the JSON event format.
CONTENT_TYPE_STRUCTURED: Final = "application/cloudevents+json"
#: Content type of the event data.
DATA_CONTENT_TYPE: Final = "application/json"

_JSON_FORMAT: Final = JSONFormat()
_RABBITMQ_PREFIX: Final = "ce-"
_AMQP_PREFIXES: Final = ("cloudEvents_", "cloudEvents:")
# What the library's decoders raise on input they do not expect: JSONFormat.read assumes UTF-8
# JSON holding an object whose "time" is a string (UnicodeDecodeError and JSONDecodeError are
# ValueErrors; a non-object or a non-string time gives AttributeError or TypeError), and the AMQP
# binding turns an integer time into a datetime, which fails with ValueError, OverflowError or
# OSError (errno EOVERFLOW) when the integer is out of range. None of them does any I/O.
# Deeply nested JSON exhausts the parser's recursion (RecursionError).
_LIBRARY_DECODE_ERRORS: Final = (
    ValueError,
    TypeError,
    AttributeError,
    OverflowError,
    OSError,
    RecursionError,
)

# The characters a URI reference may hold (RFC 3986 section 2: unreserved, reserved, and
# percent-encoded octets). CloudEvents requires ``source`` to be a URI reference; this checks its
# characters, not its grammar, which is enough to keep spaces, control characters and raw
# non-ASCII text out.
_URI_REFERENCE: Final = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")
# Media types whose content is JSON: the only data an event of ours carries.
_JSON_MEDIA_TYPE: Final = re.compile(r"(?:application|text)/json|[a-z0-9.+-]+/[a-z0-9.+-]*\+json")

#: Namespace of the name-based (version 5) UUIDs that identify export completions: the id of the
#: completion of export ``E`` is ``uuid5(EXPORT_COMPLETED_ID_NAMESPACE, E)``.
EXPORT_COMPLETED_ID_NAMESPACE: Final = uuid.UUID("5b0e3f0c-7a4e-4d1b-9c55-2f8d6a1e9b73")
#: Extension attribute of a completion that refuses a different request reusing an export id:
#: the SHA-256 of that request's data (its id is then :func:`export_conflict_event_id`).
CONFLICTING_REQUEST: Final = "conflictingrequest"

_M = TypeVar("_M", bound=BaseModel)


def event_source(instance_name: str, called_ae_title: str) -> str:
    """The ``source`` of the events a gateway instance publishes for one called AE title.

    ``dicom-gateway://<instance-name>/<called-ae-title>``, each part percent-encoded so that the
    result is a valid URI reference whatever the names contain.
    """
    if not instance_name or not called_ae_title:
        raise ContractError("an event source needs a non-empty instance name and AE title")
    return f"dicom-gateway://{quote(instance_name, safe='')}/{quote(called_ae_title, safe='')}"


def association_released_event(
    data: AssociationReleased, *, source: str, time: datetime, subject: str | None = None
) -> CloudEvent:
    """The CloudEvent announcing ``data``.

    The id is the association id, so a redelivered or republished event can be recognised; the
    subject is the study of the first instance that has one, when there is one (``subject`` when
    the instances are in a manifest).
    """
    attributes: dict[str, Any] = {
        "specversion": SPECVERSION_V1_0,
        "id": data.association_id,
        "source": source,
        "type": ASSOCIATION_RELEASED_TYPE,
        "time": time,
        "datacontenttype": DATA_CONTENT_TYPE,
    }
    if data.instances:
        # The first instance's study; an instance stored without one (not well-formed) is
        # passed over, as the manifest's writer does.
        subject = next((i.study_instance_uid for i in data.instances if i.study_instance_uid), None)
    if subject is not None:
        attributes["subject"] = subject
    try:
        return CloudEvent(attributes, data.model_dump(mode="json"))
    except CloudEventValidationError as exc:
        raise ContractError(f"cannot build the event: {exc}") from exc


def study_stable_event(
    data: StudyStable, *, event_id: str, source: str, time: datetime
) -> CloudEvent:
    """The CloudEvent announcing a stable study: ``event_id`` is one per (study, revision), the
    subject is the Study Instance UID."""
    return _build(
        STUDY_STABLE_TYPE,
        data,
        event_id=event_id,
        source=source,
        time=time,
        subject=data.study_instance_uid,
    )


def export_requested_event(
    data: ExportRequested, *, source: str, event_id: str | None = None, time: datetime
) -> CloudEvent:
    """The CloudEvent requesting the export ``data``.

    The id is ``event_id``, or a new random UUID; the subject is the export id.
    """
    return _build(
        EXPORT_REQUESTED_TYPE,
        data,
        event_id=str(uuid.uuid4()) if event_id is None else event_id,
        source=source,
        time=time,
        subject=data.export_id,
    )


def export_completed_event_id(export_id: str) -> str:
    """The id of the completion event of export ``export_id``: the same every time it is built."""
    return str(uuid.uuid5(EXPORT_COMPLETED_ID_NAMESPACE, export_id))


def export_conflict_event_id(export_id: str, request_sha256: str) -> str:
    """The id of the completion that refuses a different request reusing ``export_id`` (told
    apart by the SHA-256 of its content): the same for each redelivery of that request, never
    the id of the export's own completion."""
    return str(uuid.uuid5(EXPORT_COMPLETED_ID_NAMESPACE, f"{export_id}\n{request_sha256}"))


def export_completed_event(
    data: ExportCompleted,
    *,
    source: str,
    time: datetime,
    conflicting_request: str | None = None,
) -> CloudEvent:
    """The CloudEvent reporting the completed export ``data``.

    The id is :func:`export_completed_event_id` of the export id, so a re-published completion
    carries the same id as the first; the subject is the export id. ``conflicting_request``:
    the SHA-256 of a different request that reused the export id and is refused by this
    completion; it travels as the extension attribute :data:`CONFLICTING_REQUEST`, and the id
    is :func:`export_conflict_event_id`.
    """
    if conflicting_request is None:
        return _build(
            EXPORT_COMPLETED_TYPE,
            data,
            event_id=export_completed_event_id(data.export_id),
            source=source,
            time=time,
            subject=data.export_id,
        )
    return _build(
        EXPORT_COMPLETED_TYPE,
        data,
        event_id=export_conflict_event_id(data.export_id, conflicting_request),
        source=source,
        time=time,
        subject=data.export_id,
        extensions={CONFLICTING_REQUEST: conflicting_request},
    )


def to_structured(event: CloudEvent) -> bytes:
    """The structured-mode message body of ``event``, in the JSON event format."""
    return _JSON_FORMAT.write(event)


def parse_event(
    body: bytes, *, content_type: str | None, headers: Mapping[str, object]
) -> CloudEvent:
    """Read a CloudEvent 1.0 from a message's body, content type and headers.

    A content type of :data:`CONTENT_TYPE_STRUCTURED` (parameters such as a charset allowed)
    means structured mode; otherwise the attributes are taken from the headers (binary mode).
    Raises :class:`InvalidEvent` for anything that is not a well-formed CloudEvent 1.0.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type.startswith("application/cloudevents") and media_type != CONTENT_TYPE_STRUCTURED:
        raise InvalidEvent(f"unsupported CloudEvents format {media_type!r}")
    try:
        if media_type == CONTENT_TYPE_STRUCTURED:
            event = _JSON_FORMAT.read(_strict_event, body)
        else:
            event = _read_binary(body, content_type, headers)
    except InvalidEvent:
        raise
    except _LIBRARY_DECODE_ERRORS as exc:
        raise InvalidEvent(f"malformed CloudEvent: {exc}") from exc
    # The library types what it returns as the BaseCloudEvent protocol; _strict_event built it.
    return cast(CloudEvent, event)


def association_released_from_event(event: CloudEvent) -> AssociationReleased:
    """The data of an association-released event; :class:`InvalidEvent` if it is not one."""
    if event.get_type() != ASSOCIATION_RELEASED_TYPE:
        raise InvalidEvent(
            f"event type is {event.get_type()!r}, expected {ASSOCIATION_RELEASED_TYPE!r}"
        )
    data = _object_data(event)
    try:
        released = AssociationReleased.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {ASSOCIATION_RELEASED_TYPE} data: {exc}") from exc
    if event.get_id() != released.association_id:
        raise InvalidEvent(
            f"event id {event.get_id()!r} is not the association id {released.association_id!r}"
        )
    return released


def study_stable_from_event(event: CloudEvent) -> StudyStable:
    """The data of a stable-study event; :class:`InvalidEvent` if it is not one."""
    return _data(event, STUDY_STABLE_TYPE, StudyStable)


def export_requested_from_event(event: CloudEvent) -> ExportRequested:
    """The data of an export-requested event; :class:`InvalidEvent` if it is not one."""
    return _data(event, EXPORT_REQUESTED_TYPE, ExportRequested)


def export_completed_from_event(event: CloudEvent) -> ExportCompleted:
    """The data of an export-completed event; :class:`InvalidEvent` if it is not one."""
    completed = _data(event, EXPORT_COMPLETED_TYPE, ExportCompleted)
    conflicting = event.get_extension(CONFLICTING_REQUEST)
    expected_id = (
        export_completed_event_id(completed.export_id)
        if conflicting is None
        else export_conflict_event_id(completed.export_id, str(conflicting))
    )
    if event.get_id() != expected_id:
        raise InvalidEvent(
            f"event id {event.get_id()!r} is not the completion id {expected_id!r} "
            f"of export {completed.export_id!r}"
        )
    return completed


def _build(
    event_type: str,
    data: BaseModel,
    *,
    event_id: str,
    source: str,
    time: datetime,
    subject: str,
    extensions: Mapping[str, str] | None = None,
) -> CloudEvent:
    attributes: dict[str, Any] = {
        "specversion": SPECVERSION_V1_0,
        "id": event_id,
        "source": source,
        "type": event_type,
        "time": time,
        "datacontenttype": DATA_CONTENT_TYPE,
        "subject": subject,
        **(extensions or {}),
    }
    try:
        return CloudEvent(attributes, data.model_dump(mode="json"))
    except CloudEventValidationError as exc:
        raise ContractError(f"cannot build the event: {exc}") from exc


def _data(event: CloudEvent, event_type: str, model: type[_M]) -> _M:
    if event.get_type() != event_type:
        raise InvalidEvent(f"event type is {event.get_type()!r}, expected {event_type!r}")
    data = _object_data(event)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {event_type} data: {_describe(exc)}") from exc


def _object_data(event: CloudEvent) -> dict[str, Any]:
    """The event's data, which every event of ours has as a JSON object."""
    content_type = event.get_datacontenttype()
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if content_type is not None and not _JSON_MEDIA_TYPE.fullmatch(media_type):
        # In structured mode the library reads "data" as JSON whatever the event says it is;
        # an event that calls its data something else contradicts itself.
        raise InvalidEvent(f"event data content type is {content_type!r}, not JSON")
    data = event.get_data()
    if not isinstance(data, dict):
        raise InvalidEvent(f"event data must be a JSON object, got {type(data).__name__}")
    return data


def _describe(exc: ValidationError) -> str:
    # "field.0.name: message" for each error, without pydantic's input echo and help links.
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or '(data)'}: {error['msg']}" for error in exc.errors()
    )


def _strict_event(
    attributes: dict[str, Any], data: dict[str, Any] | str | bytes | None
) -> CloudEvent:
    # The library's CloudEvent fills in a missing id, specversion and time instead of rejecting
    # the event; a received event without an id or specversion is malformed, so check first.
    missing = [name for name in REQUIRED_ATTRIBUTES if name not in attributes]
    if missing:
        raise InvalidEvent(f"missing required CloudEvents attributes: {', '.join(missing)}")
    if attributes["specversion"] != SPECVERSION_V1_0:
        raise InvalidEvent(
            f"specversion is {attributes['specversion']!r}, expected {SPECVERSION_V1_0!r}"
        )
    source = attributes["source"]
    # The library checks that source is a non-empty string; it must also be a URI reference.
    if isinstance(source, str) and source and not _URI_REFERENCE.fullmatch(source):
        raise InvalidEvent(f"source {source[:200]!r} is not a URI reference")
    try:
        return CloudEvent(attributes, data)
    except CloudEventValidationError as exc:
        raise InvalidEvent(str(exc)) from exc


def _read_binary(
    body: bytes, content_type: str | None, headers: Mapping[str, object]
) -> BaseCloudEvent:
    rabbitmq_headers = {
        name: _header_text(name, value)
        for name, value in headers.items()
        if name.lower().startswith(_RABBITMQ_PREFIX)
    }
    # The AMQP binding keeps native values (an integer time is milliseconds since the epoch).
    amqp_properties = {
        name: _header_text(name, value) if isinstance(value, bytes) else value
        for name, value in headers.items()
        if name.startswith(_AMQP_PREFIXES)
    }
    if rabbitmq_headers and amqp_properties:
        raise InvalidEvent("message mixes ce- and cloudEvents attribute headers")
    if rabbitmq_headers:
        message = rabbitmq.RabbitMQMessage(rabbitmq_headers, content_type, body)
        return rabbitmq.from_binary(message, _JSON_FORMAT, _strict_event)
    if amqp_properties:
        properties = {} if content_type is None else {amqp.CONTENT_TYPE_PROPERTY: content_type}
        amqp_message = amqp.AMQPMessage(properties, amqp_properties, body)
        return amqp.from_binary(amqp_message, _JSON_FORMAT, _strict_event)
    raise InvalidEvent(
        f"not a CloudEvent: content type {content_type!r} is not {CONTENT_TYPE_STRUCTURED!r} "
        "and no ce- or cloudEvents attribute headers are present"
    )


def _header_text(name: str, value: object) -> str:
    # RabbitMQ clients hand back AMQP 0-9-1 long strings as str or as bytes.
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"header {name!r} is not UTF-8") from exc
    if not isinstance(value, str):
        raise InvalidEvent(f"header {name!r} must be a string, got {type(value).__name__}")
    return value
