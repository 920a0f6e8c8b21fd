"""The export contract's CloudEvents: attributes, ids, round trips and what they reject."""

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.v1.event import CloudEvent

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    EXPORT_COMPLETED_ID_NAMESPACE,
    export_completed_event,
    export_completed_event_id,
    export_completed_from_event,
    export_requested_event,
    export_requested_from_event,
    parse_event,
    to_structured,
)
from contracts.errors import ContractError, InvalidEvent
from contracts.export import (
    EXPORT_COMPLETED_TYPE,
    EXPORT_REQUESTED_TYPE,
)
from tests.support.export_samples import (
    COMPLETED,
    EVENT_TIME,
    FAILED,
    KEY_1,
    REQUEST,
    SOURCE,
    completed,
    completed_fields,
    destination,
    destination_fields,
    request_fields,
)


def requested_event(event_id: str | None = "request-1") -> CloudEvent:
    return export_requested_event(REQUEST, source=SOURCE, event_id=event_id, time=EVENT_TIME)


def completed_event() -> CloudEvent:
    return export_completed_event(COMPLETED, source=SOURCE, time=EVENT_TIME)


def test_export_requested_event_attributes() -> None:
    built = requested_event()
    assert built.get_specversion() == "1.0"
    assert built.get_id() == "request-1"
    assert built.get_type() == EXPORT_REQUESTED_TYPE
    assert built.get_source() == SOURCE
    assert built.get_subject() == REQUEST.export_id
    assert built.get_time() == EVENT_TIME
    assert built.get_datacontenttype() == "application/json"
    assert built.get_data() == REQUEST.model_dump(mode="json")


def test_export_requested_event_id_defaults_to_a_fresh_uuid4() -> None:
    first, second = requested_event(None).get_id(), requested_event(None).get_id()
    assert uuid.UUID(first).version == 4
    assert str(uuid.UUID(first)) == first
    assert first != second


def test_export_completed_event_attributes() -> None:
    built = completed_event()
    assert built.get_id() == export_completed_event_id(COMPLETED.export_id)
    assert built.get_type() == EXPORT_COMPLETED_TYPE
    assert built.get_source() == SOURCE
    assert built.get_subject() == COMPLETED.export_id
    assert built.get_time() == EVENT_TIME
    assert built.get_datacontenttype() == "application/json"
    assert built.get_data() == COMPLETED.model_dump(mode="json")


def test_export_completed_event_id_is_stable_per_export() -> None:
    # A completion re-published later, from another process, with another time, keeps its id.
    again = export_completed_event(
        completed(destination("pacs", FAILED), destination("archive", FAILED)),
        source="dicom-gateway://gw-2/export",
        time=EVENT_TIME + timedelta(days=1),
    )
    assert again.get_id() == completed_event().get_id()
    assert again.get_id() == str(uuid.uuid5(EXPORT_COMPLETED_ID_NAMESPACE, COMPLETED.export_id))
    assert uuid.UUID(again.get_id()).version == 5
    assert export_completed_event_id("another-export") != again.get_id()


@pytest.mark.parametrize(
    "build",
    [
        lambda: export_requested_event(REQUEST, source=SOURCE, time=datetime(2024, 5, 1)),
        lambda: export_completed_event(COMPLETED, source=SOURCE, time=datetime(2024, 5, 1)),
    ],
)
def test_export_events_reject_a_naive_time(build: Any) -> None:
    with pytest.raises(ContractError, match="timezone aware"):
        build()


def round_trip(built: CloudEvent, content_type: str) -> CloudEvent:
    """``built`` written in the mode ``content_type`` names (structured or binary) and read back."""
    if content_type == CONTENT_TYPE_STRUCTURED:
        return parse_event(to_structured(built), content_type=content_type, headers={})
    message = rabbitmq.to_binary_event(built)
    assert message.content_type == content_type
    return parse_event(message.body, content_type=message.content_type, headers=message.headers)


@pytest.mark.parametrize("content_type", [CONTENT_TYPE_STRUCTURED, "application/json"])
def test_export_requested_event_round_trips(content_type: str) -> None:
    built = requested_event()
    parsed = round_trip(built, content_type)
    assert parsed.get_attributes() == built.get_attributes()
    assert export_requested_from_event(parsed) == REQUEST


@pytest.mark.parametrize("content_type", [CONTENT_TYPE_STRUCTURED, "application/json"])
def test_export_completed_event_round_trips(content_type: str) -> None:
    built = completed_event()
    parsed = round_trip(built, content_type)
    assert parsed.get_attributes() == built.get_attributes()
    assert export_completed_from_event(parsed) == COMPLETED


def _with_data(event: CloudEvent, data: Any) -> CloudEvent:
    return CloudEvent(event.get_attributes(), data)


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (completed_event(), r"event type is 'dicomgateway\.export\.completed\.v1', expected"),
        (
            CloudEvent({"id": "1", "source": SOURCE, "type": "other.v1"}, {}),
            r"event type is 'other\.v1'",
        ),
        (_with_data(requested_event(), "not json"), "must be a JSON object, got str"),
        (_with_data(requested_event(), None), "must be a JSON object, got NoneType"),
        (
            _with_data(requested_event(), request_fields(object_keys=["../x"])),
            r"invalid dicomgateway\.export\.requested\.v1 data: object_keys\.0: [^;]*'\.\./x' "
            r"is not an object key [^;]*$",
        ),
        (
            _with_data(requested_event(), request_fields()),
            r"data: \(data\): .*exactly one of association_id and object_keys",
        ),
        (
            _with_data(requested_event(), {"destinations": ["pacs"], "object_keys": [KEY_1]}),
            "data: export_id: Field required",
        ),
    ],
)
def test_export_requested_from_event_rejects(event: CloudEvent, match: str) -> None:
    with pytest.raises(InvalidEvent, match=match):
        export_requested_from_event(event)


@pytest.mark.parametrize(
    ("event", "match"),
    [
        (requested_event(), r"event type is 'dicomgateway\.export\.requested\.v1', expected"),
        (_with_data(completed_event(), [1]), "must be a JSON object, got list"),
        (
            _with_data(completed_event(), completed_fields(status="succeeded")),
            r"invalid dicomgateway\.export\.completed\.v1 data: .*destinations make it",
        ),
        (
            _with_data(
                completed_event(),
                completed_fields(destinations=[destination_fields(instances_sent=5)]),
            ),
            r"data: destinations\.0: [^;]*instances_sent is 5 but 1 instances are sent$",
        ),
        (
            CloudEvent(completed_event().get_attributes() | {"id": "other"}, completed_fields()),
            "event id 'other' is not the completion id",
        ),
    ],
)
def test_export_completed_from_event_rejects(event: CloudEvent, match: str) -> None:
    with pytest.raises(InvalidEvent, match=match):
        export_completed_from_event(event)


def test_parse_event_then_export_requested_from_event_rejects_a_bad_structured_body() -> None:
    fields = json.loads(to_structured(requested_event()))
    fields["data"]["destinations"] = []
    parsed = parse_event(
        json.dumps(fields).encode(), content_type=CONTENT_TYPE_STRUCTURED, headers={}
    )
    with pytest.raises(InvalidEvent, match="data: destinations: "):
        export_requested_from_event(parsed)
