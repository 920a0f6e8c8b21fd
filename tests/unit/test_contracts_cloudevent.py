import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from cloudevents.core.bindings import amqp, rabbitmq
from cloudevents.core.v1.event import CloudEvent

from contracts.cloudevent import (
    CONTENT_TYPE_STRUCTURED,
    association_released_event,
    association_released_from_event,
    event_source,
    parse_event,
    to_structured,
)
from contracts.errors import ContractError, InvalidEvent
from contracts.events import ASSOCIATION_RELEASED_TYPE, AssociationReleased, StoredInstance
from contracts.keys import object_key

ASSOCIATION_ID = "3f1c2b9e-8d4a-4c6b-9e2f-1a2b3c4d5e6f"
STUDY = "1.2.826.0.1.3680043.8.498.1"
OTHER_STUDY = "1.2.826.0.1.3680043.8.498.9"
SERIES = "1.2.826.0.1.3680043.8.498.2"
SOURCE = "dicom-gateway://gw-1/GATEWAY"
# Whole milliseconds: the AMQP binding carries time as an integer count of milliseconds.
EVENT_TIME = datetime(2024, 5, 1, 12, 0, 8, 125000, tzinfo=UTC)


def stored(study: str, sop: str, size: int) -> StoredInstance:
    return StoredInstance(
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid=study,
        series_instance_uid=SERIES,
        object_key=object_key(ASSOCIATION_ID, study, SERIES, sop),
        size=size,
        sha256=hashlib.sha256(sop.encode()).hexdigest(),
    )


def released(*instances: StoredInstance) -> AssociationReleased:
    return AssociationReleased(
        association_id=ASSOCIATION_ID,
        called_ae_title="GATEWAY",
        calling_ae_title="MODALITY1",
        remote_host="192.0.2.10",
        remote_port=40112,
        pipeline="default",
        started_at=datetime(2024, 5, 1, 12, tzinfo=UTC),
        released_at=datetime(2024, 5, 1, 14, 0, 7, tzinfo=timezone(timedelta(hours=2))),
        instance_count=len(instances),
        total_bytes=sum(i.size for i in instances),
        bucket="dicom-gateway",
        instances=instances,
    )


DATA = released(stored(STUDY, f"{SERIES}.1", 100), stored(OTHER_STUDY, f"{SERIES}.2", 200))


def event() -> CloudEvent:
    return association_released_event(DATA, source=SOURCE, time=EVENT_TIME)


def structured_fields(**changes: Any) -> dict[str, Any]:
    fields = json.loads(to_structured(event()))
    assert isinstance(fields, dict)
    return fields | changes


def rabbitmq_headers(**changes: str) -> dict[str, object]:
    return {**rabbitmq.to_binary_event(event()).headers, **changes}


def test_association_released_event_attributes() -> None:
    built = event()
    assert built.get_specversion() == "1.0"
    assert built.get_id() == ASSOCIATION_ID
    assert built.get_type() == ASSOCIATION_RELEASED_TYPE == "dicomgateway.association.released.v1"
    assert built.get_source() == SOURCE
    assert built.get_subject() == STUDY  # the first instance's study, not the second's
    assert built.get_time() == EVENT_TIME
    assert built.get_datacontenttype() == "application/json"
    assert built.get_data() == DATA.model_dump(mode="json")


def test_association_released_event_without_instances_has_no_subject() -> None:
    built = association_released_event(released(), source=SOURCE, time=EVENT_TIME)
    assert "subject" not in built.get_attributes()
    assert built.get_subject() is None


def test_association_released_event_rejects_a_naive_time() -> None:
    with pytest.raises(ContractError, match="timezone aware"):
        association_released_event(DATA, source=SOURCE, time=datetime(2024, 5, 1, 12))


@pytest.mark.parametrize(
    ("instance_name", "called_ae_title", "source"),
    [
        ("gw-1", "GATEWAY", "dicom-gateway://gw-1/GATEWAY"),
        ("gw 1", "MY AE", "dicom-gateway://gw%201/MY%20AE"),
        ("a/b", "AE?#%", "dicom-gateway://a%2Fb/AE%3F%23%25"),
        ("h\u00f4te", "AE", "dicom-gateway://h%C3%B4te/AE"),
    ],
)
def test_event_source(instance_name: str, called_ae_title: str, source: str) -> None:
    built = event_source(instance_name, called_ae_title)
    assert built == source
    parts = urlsplit(built)
    assert (parts.scheme, unquote(parts.netloc)) == ("dicom-gateway", instance_name)
    assert unquote(parts.path.removeprefix("/")) == called_ae_title
    assert (parts.query, parts.fragment) == ("", "")


@pytest.mark.parametrize(("instance_name", "called_ae_title"), [("", "AE"), ("gw", "")])
def test_event_source_rejects_empty_names(instance_name: str, called_ae_title: str) -> None:
    with pytest.raises(ContractError, match="non-empty"):
        event_source(instance_name, called_ae_title)


def test_to_structured_writes_the_json_event_format() -> None:
    fields = json.loads(to_structured(event()))
    assert fields == {
        "specversion": "1.0",
        "id": ASSOCIATION_ID,
        "source": SOURCE,
        "type": ASSOCIATION_RELEASED_TYPE,
        "time": "2024-05-01T12:00:08.125000Z",
        "datacontenttype": "application/json",
        "subject": STUDY,
        "data": DATA.model_dump(mode="json"),
    }


@pytest.mark.parametrize(
    "content_type",
    [
        "application/cloudevents+json",
        "application/cloudevents+json; charset=utf-8",
        "Application/CloudEvents+JSON;charset=UTF-8",
    ],
)
def test_parse_event_reads_structured_mode(content_type: str) -> None:
    parsed = parse_event(to_structured(event()), content_type=content_type, headers={})
    assert parsed.get_attributes() == event().get_attributes()
    assert association_released_from_event(parsed) == DATA


def test_parse_event_reads_rabbitmq_binary_mode() -> None:
    message = rabbitmq.to_binary_event(event())
    assert message.headers["ce-id"] == ASSOCIATION_ID  # the binding's header names
    assert message.content_type == "application/json"
    parsed = parse_event(message.body, content_type=message.content_type, headers=message.headers)
    assert parsed.get_attributes() == event().get_attributes()
    assert association_released_from_event(parsed) == DATA


def test_parse_event_reads_rabbitmq_headers_as_bytes_and_ignores_other_headers() -> None:
    # What a RabbitMQ client may hand back after dead-lettering: bytes values, x- headers.
    message = rabbitmq.to_binary_event(event())
    headers: dict[str, object] = {
        "CE-" + name.removeprefix("ce-"): value.encode() for name, value in message.headers.items()
    }
    headers |= {"x-death": [{"count": 1, "queue": "q"}], "x-delivery-count": 2}
    parsed = parse_event(message.body, content_type=message.content_type, headers=headers)
    assert parsed.get_attributes() == event().get_attributes()


@pytest.mark.parametrize("prefix", ["cloudEvents_", "cloudEvents:"])
def test_parse_event_reads_amqp_binary_mode(prefix: str) -> None:
    message = amqp.to_binary_event(event())
    assert message.application_properties["cloudEvents_time"] == int(EVENT_TIME.timestamp() * 1000)
    headers = {
        prefix + name.removeprefix("cloudEvents_"): value
        for name, value in message.application_properties.items()
    }
    parsed = parse_event(
        message.application_data,
        content_type=message.properties["content-type"],
        headers=headers,
    )
    assert parsed.get_attributes() == event().get_attributes()
    assert association_released_from_event(parsed) == DATA


def _structured(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()


def _without(fields: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if key != name}


BINARY = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "match"),
    [
        (b"{", CONTENT_TYPE_STRUCTURED, {}, "malformed CloudEvent"),
        (b"\xff", CONTENT_TYPE_STRUCTURED, {}, "malformed CloudEvent"),
        (b"[1]", CONTENT_TYPE_STRUCTURED, {}, "malformed CloudEvent"),
        (b"1", CONTENT_TYPE_STRUCTURED, {}, "malformed CloudEvent"),
        (_structured(_without(structured_fields(), "id")), CONTENT_TYPE_STRUCTURED, {}, "id"),
        (
            _structured(_without(structured_fields(), "specversion")),
            CONTENT_TYPE_STRUCTURED,
            {},
            "missing required CloudEvents attributes: specversion",
        ),
        (
            _structured(structured_fields(specversion="0.3")),
            CONTENT_TYPE_STRUCTURED,
            {},
            "specversion is '0.3'",
        ),
        (
            _structured(structured_fields(source="")),
            CONTENT_TYPE_STRUCTURED,
            {},
            "'source' must not be None or empty",
        ),
        (
            _structured(structured_fields(source="dicom gateway://gw-1")),
            CONTENT_TYPE_STRUCTURED,
            {},
            "is not a URI reference",
        ),
        (
            _structured(structured_fields(source="dicom-gateway://gw-ü/AE")),
            CONTENT_TYPE_STRUCTURED,
            {},
            "is not a URI reference",
        ),
        (
            b"{}",
            "application/json",
            rabbitmq_headers(**{"ce-source": "/pipelines/\x00lung"}),
            "is not a URI reference",
        ),
        (
            b"{}",
            "application/json",
            rabbitmq_headers(**{"ce-source": "/pipelines/100%"}),
            "is not a URI reference",
        ),
        (
            _structured(structured_fields(time="yesterday")),
            CONTENT_TYPE_STRUCTURED,
            {},
            "malformed",
        ),
        (_structured(structured_fields(time=5)), CONTENT_TYPE_STRUCTURED, {}, "malformed"),
        (
            _structured(structured_fields(time="2024-05-01T12:00:00")),
            CONTENT_TYPE_STRUCTURED,
            {},
            "timezone aware",
        ),
        (b"{}", "application/cloudevents-batch+json", {}, "unsupported CloudEvents format"),
        (b"{}", "application/json", {}, "not a CloudEvent"),
        (b"{}", None, {"x-delivery-count": 1}, "not a CloudEvent"),
        (b"{}", "application/json", _without(rabbitmq_headers(), "ce-id"), "attributes: id"),
        (b"{}", "application/json", rabbitmq_headers(**{"ce-time": "soon"}), "malformed"),
        (b"{}", "application/json", {**rabbitmq_headers(), "ce-id": 7}, "must be a string"),
        (b"{}", "application/json", {**rabbitmq_headers(), "ce-id": b"\xff"}, "not UTF-8"),
        (
            b"{}",
            "application/json",
            {**rabbitmq_headers(), "cloudEvents_id": "x"},
            "mixes ce- and cloudEvents",
        ),
        (
            b"{}",
            "application/json",
            {f"cloudEvents_{name}": value for name, value in BINARY.items()}
            | {"cloudEvents_id": 7},
            "'id' must be a <class 'str'>",
        ),
        (
            b"{}",
            "application/json",
            {f"cloudEvents_{name}": value for name, value in BINARY.items()}
            | {"cloudEvents_time": 10**20},
            "malformed",
        ),
    ],
)
def test_parse_event_rejects(
    body: bytes, content_type: str | None, headers: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidEvent, match=match):
        parse_event(body, content_type=content_type, headers=headers)


def test_association_released_from_event_rejects_another_type() -> None:
    other = CloudEvent({"id": ASSOCIATION_ID, "source": SOURCE, "type": "other.v1"}, {})
    with pytest.raises(InvalidEvent, match=r"event type is 'other\.v1'"):
        association_released_from_event(other)


def test_association_released_from_event_rejects_data_that_is_not_an_object() -> None:
    # Binary mode with a body that is not JSON: the library hands back the text.
    headers = rabbitmq_headers()
    parsed = parse_event(b"not json", content_type="application/json", headers=headers)
    with pytest.raises(InvalidEvent, match="must be a JSON object, got str"):
        association_released_from_event(parsed)


def test_association_released_from_event_rejects_invalid_data() -> None:
    data = structured_fields()["data"] | {"instance_count": 5}
    body = _structured(structured_fields(data=data))
    parsed = parse_event(body, content_type=CONTENT_TYPE_STRUCTURED, headers={})
    with pytest.raises(InvalidEvent, match="instance_count is 5 but 2 instances"):
        association_released_from_event(parsed)


def test_association_released_from_event_rejects_an_id_other_than_the_association() -> None:
    body = _structured(structured_fields(id="another-id"))
    parsed = parse_event(body, content_type=CONTENT_TYPE_STRUCTURED, headers={})
    with pytest.raises(InvalidEvent, match="is not the association id"):
        association_released_from_event(parsed)


@pytest.mark.parametrize(
    "source",
    [
        "/pipelines/lung",
        "urn:uuid:3f1c2b9e",
        "dicom-gateway://gw%20one/AE?x=1#f",
        "a:b@c[1]!$&'()*+,;=",
    ],
)
def test_parse_event_takes_any_uri_reference_as_source(source: str) -> None:
    body = _structured(structured_fields(source=source))
    parsed = parse_event(body, content_type=CONTENT_TYPE_STRUCTURED, headers={})
    assert parsed.get_source() == source


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "text/json", "application/x-data+json"]
)
def test_data_of_any_json_media_type_is_read(content_type: str) -> None:
    body = _structured(structured_fields(datacontenttype=content_type))
    parsed = parse_event(body, content_type=CONTENT_TYPE_STRUCTURED, headers={})
    assert association_released_from_event(parsed) == DATA


@pytest.mark.parametrize("content_type", ["application/xml", "text/plain", "application/jsonx"])
def test_data_said_to_be_other_than_json_is_rejected(content_type: str) -> None:
    """The JSON event format reads "data" as JSON whatever the event calls it; such an event
    contradicts itself and is not one of ours."""
    body = _structured(structured_fields(datacontenttype=content_type))
    parsed = parse_event(body, content_type=CONTENT_TYPE_STRUCTURED, headers={})
    with pytest.raises(InvalidEvent, match="not JSON"):
        association_released_from_event(parsed)
