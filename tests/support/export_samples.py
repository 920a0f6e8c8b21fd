"""Sample export requests and completions for the contract's tests: the same realistic values
in the tests of the models and of their CloudEvents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from contracts.export import (
    DestinationResult,
    ExportCompleted,
    ExportRequested,
    ExportStatus,
    InstanceOutcome,
    InstanceResult,
    destination_status,
    overall_status,
)
from contracts.keys import object_key

ASSOCIATION_ID = "3f1c2b9e-8d4a-4c6b-9e2f-1a2b3c4d5e6f"
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
KEY_1 = object_key(ASSOCIATION_ID, STUDY, SERIES, f"{SERIES}.1")
KEY_2 = object_key(ASSOCIATION_ID, STUDY, SERIES, f"{SERIES}.2")
SOURCE = "dicom-gateway://gw-1/export"
EVENT_TIME = datetime(2024, 5, 1, 12, 0, 8, 125000, tzinfo=UTC)

SENT, FAILED, SKIPPED = InstanceOutcome.SENT, InstanceOutcome.FAILED, InstanceOutcome.SKIPPED
SUCCEEDED = ExportStatus.SUCCEEDED
PARTIALLY_FAILED = ExportStatus.PARTIALLY_FAILED
STATUS_FAILED = ExportStatus.FAILED


def request_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"export_id": "pipeline-42:run.7_a", "destinations": ["pacs"]}
    return fields | changes


def instance(key: str, status: InstanceOutcome) -> InstanceResult:
    sent = status is SENT
    return InstanceResult(
        object_key=key,
        sop_instance_uid=key.rsplit("/", 1)[1].removesuffix(".dcm"),
        status=status,
        dicom_status=0 if sent else (0xA700 if status is FAILED else None),
        error=None if sent else f"{status} for a reason",
    )


def destination(name: str, *statuses: InstanceOutcome) -> DestinationResult:
    instances = tuple(
        instance(object_key(ASSOCIATION_ID, STUDY, SERIES, f"{SERIES}.{n}"), status)
        for n, status in enumerate(statuses, start=1)
    )
    return DestinationResult(
        name=name,
        status=destination_status(instances),
        instances_sent=statuses.count(SENT),
        instances_failed=statuses.count(FAILED),
        instances=instances,
    )


def completed(*destinations: DestinationResult) -> ExportCompleted:
    return ExportCompleted(
        export_id="pipeline-42:run.7_a",
        status=overall_status(destinations),
        correlation={"run": 7, "tags": ["a", "b"], "nested": {"x": None}},
        started_at=datetime(2024, 5, 1, 12, tzinfo=UTC),
        finished_at=datetime(2024, 5, 1, 14, 0, 7, tzinfo=timezone(timedelta(hours=2))),
        destinations=destinations,
    )


REQUEST = ExportRequested.model_validate(
    request_fields(
        destinations=["pacs", "archive"],
        object_keys=[KEY_1, KEY_2],
        reply_routing_key="export.completed.cli-1",
        correlation={"job": {"id": 7}, "note": "re-send"},
    )
)
COMPLETED = completed(destination("pacs", SENT, FAILED, SKIPPED), destination("archive", SENT))


def completed_fields(**changes: Any) -> dict[str, Any]:
    return COMPLETED.model_dump(mode="json") | changes


def destination_fields(**changes: Any) -> dict[str, Any]:
    return COMPLETED.destinations[0].model_dump(mode="json") | changes


def instance_fields(**changes: Any) -> dict[str, Any]:
    return COMPLETED.destinations[0].instances[0].model_dump(mode="json") | changes
