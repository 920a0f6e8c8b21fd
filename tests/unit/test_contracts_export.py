"""The export contract's models: requests, status rules, completions and their schemas."""

import json
import re
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from contracts.export import (
    EXPORT_COMPLETED_TYPE,
    EXPORT_REQUESTED_TYPE,
    DestinationResult,
    ExportCompleted,
    ExportRequested,
    ExportStatus,
    InstanceOutcome,
    InstanceResult,
    destination_status,
    is_valid_export_id,
    overall_status,
)
from contracts.keys import object_key
from contracts.routing import (
    EXPORT_COMPLETED_ROUTING_KEY,
    EXPORT_REQUESTED_ROUTING_KEY,
    is_valid_routing_key,
)
from contracts.schema_files import render
from tests.support.export_samples import (
    ASSOCIATION_ID,
    COMPLETED,
    FAILED,
    KEY_1,
    KEY_2,
    PARTIALLY_FAILED,
    REQUEST,
    SENT,
    SERIES,
    SKIPPED,
    STATUS_FAILED,
    STUDY,
    SUCCEEDED,
    completed_fields,
    destination,
    destination_fields,
    instance,
    instance_fields,
    request_fields,
)


def test_event_types_and_routing_keys() -> None:
    assert EXPORT_REQUESTED_TYPE == "dicomgateway.export.requested.v1"
    assert EXPORT_COMPLETED_TYPE == "dicomgateway.export.completed.v1"
    assert EXPORT_REQUESTED_ROUTING_KEY == "export.requested"
    assert EXPORT_COMPLETED_ROUTING_KEY == "export.completed"


# --- The request ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"association_id": ASSOCIATION_ID},
        {"object_keys": [KEY_1]},
        {"object_keys": [KEY_1, KEY_2], "association_id": None},
        {"association_id": ASSOCIATION_ID, "object_keys": None},
        {"association_id": ASSOCIATION_ID, "destinations": ["pacs", "archive", "P" * 64]},
        {"association_id": ASSOCIATION_ID, "export_id": "e" * 128},
        {"association_id": ASSOCIATION_ID, "export_id": "A.b_c:d-9"},
        {"association_id": ASSOCIATION_ID, "reply_routing_key": "replies.my-pipeline"},
        {"association_id": ASSOCIATION_ID, "reply_routing_key": "r" * 255},
        {"association_id": ASSOCIATION_ID, "correlation": {}},
        {"association_id": ASSOCIATION_ID, "correlation": {"a": [1, {"b": None}], "c": 1.5}},
    ],
)
def test_export_requested_accepts(changes: dict[str, Any]) -> None:
    request = ExportRequested.model_validate(request_fields(**changes))
    assert ExportRequested.model_validate_json(request.model_dump_json()) == request
    assert (request.association_id is None) != (request.object_keys is None)


def test_export_requested_defaults() -> None:
    request = ExportRequested(export_id="e1", destinations=("pacs",), association_id=ASSOCIATION_ID)
    assert (request.object_keys, request.reply_routing_key, request.correlation) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({}, "exactly one of association_id and object_keys"),
        ({"association_id": None, "object_keys": None}, "exactly one of association_id"),
        (
            {"association_id": ASSOCIATION_ID, "object_keys": [KEY_1]},
            "exactly one of association_id and object_keys",
        ),
        ({"object_keys": ["../x"]}, r"object_keys\.0\n.*'\.\./x' is not an object key"),
        ({"object_keys": [KEY_1, f"../{KEY_2}"]}, r"object_keys\.1"),
        ({"object_keys": []}, "list at least one object key"),
        ({"object_keys": [KEY_1, KEY_1]}, "object key listed more than once"),
        ({"association_id": ASSOCIATION_ID.upper()}, "not a valid association id"),
        ({"association_id": ASSOCIATION_ID, "destinations": []}, "list at least one destination"),
        (
            {"association_id": ASSOCIATION_ID, "destinations": ["pacs", "archive", "pacs"]},
            "destination listed more than once: 'pacs'",
        ),
        ({"association_id": ASSOCIATION_ID, "destinations": [""]}, r"destinations\.0"),
        ({"association_id": ASSOCIATION_ID, "destinations": ["P" * 65]}, r"destinations\.0"),
        ({"association_id": ASSOCIATION_ID, "reply_routing_key": "replies.*"}, "routing key"),
        ({"association_id": ASSOCIATION_ID, "reply_routing_key": "replies.#"}, "routing key"),
        ({"association_id": ASSOCIATION_ID, "reply_routing_key": ""}, "routing key"),
        ({"association_id": ASSOCIATION_ID, "reply_routing_key": "r" * 256}, "routing key"),
        (
            {"association_id": ASSOCIATION_ID, "reply_routing_key": "export.requested"},
            "back to the export requests",
        ),
        ({"association_id": ASSOCIATION_ID, "export_id": ""}, "not a valid export id"),
        ({"association_id": ASSOCIATION_ID, "export_id": "e" * 129}, "not a valid export id"),
        ({"association_id": ASSOCIATION_ID, "export_id": "a/b"}, "not a valid export id"),
        ({"association_id": ASSOCIATION_ID, "export_id": "a b"}, "not a valid export id"),
        ({"association_id": ASSOCIATION_ID, "export_id": "e1\n"}, "not a valid export id"),
        ({"association_id": ASSOCIATION_ID, "export_id": 42}, "export_id"),
        ({"association_id": ASSOCIATION_ID, "correlation": [1]}, "correlation"),
        ({"association_id": ASSOCIATION_ID, "unexpected": 1}, "Extra inputs are not permitted"),
    ],
)
def test_export_requested_rejects(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        ExportRequested.model_validate(request_fields(**changes))


@pytest.mark.parametrize("missing", ["export_id", "destinations"])
def test_export_requested_requires(missing: str) -> None:
    fields = request_fields(association_id=ASSOCIATION_ID)
    del fields[missing]
    with pytest.raises(ValidationError, match=missing):
        ExportRequested.model_validate(fields)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("e1", True),
        ("A.b_c:d-9", True),
        ("e" * 128, True),
        ("e" * 129, False),
        ("", False),
        ("a/b", False),
        ("a b", False),
        ("a*", False),
        ("caf\u00e9", False),
        ("e1\n", False),
    ],
)
def test_is_valid_export_id(value: str, valid: bool) -> None:
    assert is_valid_export_id(value) is valid


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("export.completed", True),
        ("replies.cli-1", True),
        ("a..b", True),
        ("x", True),
        ("r" * 255, True),
        ("\u00e9" * 127 + "r", True),  # 255 UTF-8 bytes
        ("r" * 256, False),
        ("\u00e9" * 128, False),  # 128 characters but 256 UTF-8 bytes
        ("", False),
        ("replies.*", False),
        ("#", False),
        ("a.#.b", False),
        ("\udc80", False),  # a lone surrogate has no UTF-8 encoding
    ],
)
def test_is_valid_routing_key(key: str, valid: bool) -> None:
    assert is_valid_routing_key(key) is valid


def test_export_models_are_frozen() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        REQUEST.export_id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        COMPLETED.status = STATUS_FAILED  # type: ignore[misc]


# --- Status rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((), STATUS_FAILED),  # nothing could be sent
        ((SENT,), SUCCEEDED),
        ((SENT, SENT), SUCCEEDED),
        ((SENT, SKIPPED), SUCCEEDED),
        ((SKIPPED,), SUCCEEDED),
        ((FAILED,), STATUS_FAILED),
        ((FAILED, FAILED), STATUS_FAILED),
        ((FAILED, SKIPPED), STATUS_FAILED),
        ((SENT, FAILED), PARTIALLY_FAILED),
        ((FAILED, SKIPPED, SENT), PARTIALLY_FAILED),
    ],
)
def test_destination_status(statuses: tuple[InstanceOutcome, ...], expected: ExportStatus) -> None:
    instances = [
        instance(object_key(ASSOCIATION_ID, STUDY, SERIES, f"{SERIES}.{n}"), status)
        for n, status in enumerate(statuses, start=1)
    ]
    assert destination_status(instances) is expected


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((), STATUS_FAILED),
        ((SUCCEEDED,), SUCCEEDED),
        ((SUCCEEDED, SUCCEEDED), SUCCEEDED),
        ((STATUS_FAILED,), STATUS_FAILED),
        ((STATUS_FAILED, STATUS_FAILED), STATUS_FAILED),
        ((PARTIALLY_FAILED,), PARTIALLY_FAILED),
        ((SUCCEEDED, STATUS_FAILED), PARTIALLY_FAILED),
        ((SUCCEEDED, PARTIALLY_FAILED), PARTIALLY_FAILED),
        ((PARTIALLY_FAILED, STATUS_FAILED), PARTIALLY_FAILED),
    ],
)
def test_overall_status(statuses: tuple[ExportStatus, ...], expected: ExportStatus) -> None:
    outcomes = {SUCCEEDED: (SENT,), PARTIALLY_FAILED: (SENT, FAILED), STATUS_FAILED: (FAILED,)}
    results = [destination(f"d{n}", *outcomes[status]) for n, status in enumerate(statuses)]
    assert [result.status for result in results] == list(statuses)
    assert overall_status(results) is expected


# --- The completion ------------------------------------------------------------------------------


def test_export_completed_round_trips_through_json() -> None:
    assert ExportCompleted.model_validate_json(COMPLETED.model_dump_json()) == COMPLETED
    assert COMPLETED.status is PARTIALLY_FAILED
    dumped = COMPLETED.model_dump(mode="json")
    assert dumped["status"] == "partially_failed"
    assert [i["status"] for i in dumped["destinations"][0]["instances"]] == [
        "sent",
        "failed",
        "skipped",
    ]
    assert dumped["destinations"][0]["instances"][1]["dicom_status"] == 0xA700


@pytest.mark.parametrize(
    ("model", "fields", "match"),
    [
        (ExportCompleted, completed_fields(status="succeeded"), "destinations make it partially"),
        (ExportCompleted, completed_fields(destinations=[]), "list at least one destination"),
        (
            ExportCompleted,
            completed_fields(destinations=[destination_fields(), destination_fields()]),
            "destination listed more than once: 'pacs'",
        ),
        (ExportCompleted, completed_fields(export_id="a/b"), "not a valid export id"),
        (ExportCompleted, completed_fields(started_at="2024-05-01T12:00:00"), "timezone"),
        (ExportCompleted, completed_fields(finished_at="2024-05-01T12:00:00"), "timezone"),
        (ExportCompleted, completed_fields(status="done"), "status"),
        (DestinationResult, destination_fields(instances_sent=2), "instances_sent is 2 but 1"),
        (DestinationResult, destination_fields(instances_failed=0), "instances_failed is 0 but"),
        (DestinationResult, destination_fields(status="failed"), "instances make it partially"),
        (DestinationResult, destination_fields(name=""), "name"),
        (DestinationResult, destination_fields(instances_sent=-1), "instances_sent"),
        (InstanceResult, instance_fields(dicom_status=-1), "dicom_status"),
        (InstanceResult, instance_fields(dicom_status=0x10000), "dicom_status"),
        (InstanceResult, instance_fields(status="lost"), "status"),
        (InstanceResult, instance_fields(object_key=""), "object_key"),
        (InstanceResult, instance_fields(sop_instance_uid=""), "sop_instance_uid"),
        (InstanceResult, instance_fields(unexpected=1), "Extra inputs are not permitted"),
    ],
)
def test_export_completed_rejects(
    model: type[BaseModel], fields: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        model.model_validate(fields)


def test_instance_result_of_an_unreadable_object() -> None:
    result = InstanceResult(
        object_key=f"{ASSOCIATION_ID}/",
        sop_instance_uid=None,
        status=FAILED,
        dicom_status=None,
        error="no objects are stored for this association",
    )
    failed = DestinationResult(
        name="pacs", status=STATUS_FAILED, instances_sent=0, instances_failed=1, instances=(result,)
    )
    assert failed.status is destination_status(failed.instances)


@pytest.mark.parametrize("missing", ["sop_instance_uid", "dicom_status", "error"])
def test_instance_result_requires_nullable_fields(missing: str) -> None:
    fields = instance_fields()
    del fields[missing]
    with pytest.raises(ValidationError, match=missing):
        InstanceResult.model_validate(fields)


@pytest.mark.parametrize(
    ("model", "defs"),
    [
        (ExportRequested, ()),
        (ExportCompleted, ("DestinationResult", "InstanceResult")),
    ],
)
def test_export_schemas_document_every_field(model: type[BaseModel], defs: tuple[str, ...]) -> None:
    schema = json.loads(render(model))
    objects = [schema, *(schema["$defs"][name] for name in defs)]
    assert all(obj["additionalProperties"] is False for obj in objects)
    undocumented = [
        name
        for obj in objects
        for name, field in obj["properties"].items()
        if not field.get("description")
    ]
    assert undocumented == []


def test_export_requested_schema_requires_one_selection() -> None:
    schema = json.loads(render(ExportRequested))
    assert set(schema["required"]) == {"export_id", "destinations"}
    assert [branch["required"] for branch in schema["oneOf"]] == [
        ["association_id"],
        ["object_keys"],
    ]


@pytest.mark.parametrize(
    ("key", "matches"),
    [
        (KEY_1, True),
        (object_key(ASSOCIATION_ID, "0", "0", "0"), True),
        ("../x", False),
        (f"{ASSOCIATION_ID}/{STUDY}/../{SERIES}.1.dcm", False),
        (f"{ASSOCIATION_ID.upper()}/{STUDY}/{SERIES}/{SERIES}.1.dcm", False),
        (f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/{SERIES}.1xdcm", False),
        (f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/{SERIES}.1", False),
    ],
)
def test_export_requested_schema_object_key_pattern(key: str, matches: bool) -> None:
    # Other languages validate keys with the schema's pattern; it must agree with the code here.
    schema = json.loads(render(ExportRequested))
    pattern = schema["properties"]["object_keys"]["anyOf"][0]["items"]["pattern"]
    assert (re.search(pattern, key) is not None) is matches
