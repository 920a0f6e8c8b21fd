"""Requests export cannot serve: invalid messages go to the dead-letter queue without stopping
the consumer; well-formed requests naming what does not exist get a ``failed`` completion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.cloudevent import CONTENT_TYPE_STRUCTURED
from contracts.export import EXPORT_REQUESTED_TYPE, ExportRequested, ExportStatus, InstanceOutcome
from contracts.keys import association_prefix, new_association_id, object_key
from tests.support.export import Export, completed, destination, export_harness, new_export_id
from tests.support.factories import Instance, ct_series, derived_uid
from tests.support.ingest import Ingest
from tests.support.part10_files import read_received, with_file_meta
from tests.support.settled import stop_export_with_nothing_left
from tests.support.storescp import Storescp


@pytest.fixture
def export(ingest: Ingest, tmp_path: Path) -> Iterator[Export]:
    with export_harness(ingest, tmp_path) as harness:
        yield harness


def structured(event_type: str, data: dict[str, Any], **attributes: str) -> bytes:
    """A structured-mode CloudEvent body written by hand (so that it can be wrong)."""
    envelope = {
        "specversion": "1.0",
        "id": str(derived_uid("event", event_type, json.dumps(data, sort_keys=True))),
        "source": "dicom-gateway://tests/hand-written",
        "type": event_type,
        "datacontenttype": "application/json",
        **attributes,
        "data": data,
    }
    return json.dumps(envelope).encode()


def test_invalid_messages_are_dead_lettered_and_the_consumer_goes_on(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    keys = export.put_instances(ct_series(inbox, 1))
    valid = ExportRequested(export_id=new_export_id(), destinations=("pacs",), object_keys=keys)
    data = valid.model_dump(mode="json", exclude_none=True)
    invalid: dict[str, tuple[bytes, str | None]] = {
        "not JSON": (b"\xff\xfe this is {not JSON", CONTENT_TYPE_STRUCTURED),
        "JSON, no CloudEvent attributes": (
            json.dumps({"export_id": "x", "destinations": ["pacs"]}).encode(),
            CONTENT_TYPE_STRUCTURED,
        ),
        "JSON, no content type and no ce- headers": (json.dumps(data).encode(), None),
        "wrong type": (
            structured("dicomgateway.association.released.v1", data),
            CONTENT_TYPE_STRUCTURED,
        ),
        "no destinations": (
            structured(
                EXPORT_REQUESTED_TYPE, {k: v for k, v in data.items() if k != "destinations"}
            ),
            CONTENT_TYPE_STRUCTURED,
        ),
    }

    with Storescp(tmp_path / "pacs") as pacs, export.completions() as completions:
        process = export.start(export.config([destination("pacs", pacs.port)]))
        for body, content_type in invalid.values():
            export.publish_raw(body, content_type=content_type)
        export.publish(valid)
        (message,) = completions.wait_for(1, timeout=30)
        dead = export.dead_letters(len(invalid))
        assert process.is_running()
        stop_export_with_nothing_left(process, export.ingest, export.queue, completions)
        assert len(pacs.received_files()) == 1

    done = completed(message)
    assert (done.export_id, done.status) == (valid.export_id, ExportStatus.SUCCEEDED)
    assert sorted(m.body for m in dead) == sorted(body for body, _ in invalid.values())
    for dead_letter in dead if not export.ingest.embedded else ():
        deaths = dead_letter.headers["x-death"]
        assert isinstance(deaths, list)
        death = deaths[0]
        assert isinstance(death, dict)
        assert (death["reason"], death["queue"]) == ("rejected", export.queue)
    log = process.log_text()
    assert log.count(" dead-lettered: ") == len(invalid)
    assert "'dicomgateway.association.released.v1'" in log
    assert "destinations" in log


def test_unknown_destination_missing_objects_and_empty_association_fail_with_a_reason(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    (stored,) = ct_series(inbox, 1)
    (key,) = export.put_instances([stored])
    missing = object_key(new_association_id(), *(derived_uid("missing", n) for n in range(3)))
    empty_association = new_association_id()
    unknown = ExportRequested(
        export_id=new_export_id(), destinations=("nowhere",), object_keys=(key,)
    )
    partly_missing = ExportRequested(
        export_id=new_export_id(), destinations=("pacs",), object_keys=(key, missing)
    )
    empty = ExportRequested(
        export_id=new_export_id(), destinations=("pacs",), association_id=empty_association
    )
    with Storescp(tmp_path / "pacs") as pacs, export.completions() as completions:
        process = export.start(export.config([destination("pacs", pacs.port)]))
        export.publish(unknown, partly_missing, empty)
        messages = completions.wait_for(3, timeout=30)
        stop_export_with_nothing_left(process, export.ingest, export.queue, completions)
        received = [read_received(p).sop_instance_uid for p in pacs.received_files()]
    by_id = {done.export_id: done for done in map(completed, messages)}

    to_unknown = by_id[unknown.export_id]
    assert to_unknown.status is ExportStatus.FAILED
    (nowhere,) = to_unknown.destinations
    assert (nowhere.name, nowhere.status, nowhere.instances_failed) == (
        "nowhere",
        ExportStatus.FAILED,
        1,
    )
    (instance,) = nowhere.instances
    assert instance.status is InstanceOutcome.FAILED
    assert instance.error is not None
    assert "unknown destination" in instance.error

    with_missing = by_id[partly_missing.export_id]
    assert with_missing.status is ExportStatus.PARTIALLY_FAILED
    (pacs_result,) = with_missing.destinations
    present, absent = pacs_result.instances
    assert (present.object_key, present.status) == (key, InstanceOutcome.SENT)
    assert (absent.object_key, absent.status, absent.sop_instance_uid) == (
        missing,
        InstanceOutcome.FAILED,
        None,
    )
    assert absent.error == "object does not exist"

    nothing = by_id[empty.export_id]
    assert nothing.status is ExportStatus.FAILED
    (pacs_result,) = nothing.destinations
    (placeholder,) = pacs_result.instances
    assert placeholder.object_key == association_prefix(empty_association)
    assert placeholder.status is InstanceOutcome.FAILED
    assert placeholder.error is not None
    assert "no objects" in placeholder.error

    assert received == [stored.uids.sop_instance]


def test_deeply_nested_json_is_dead_lettered_and_does_not_stall_the_consumer(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    """Regression: json.loads raised RecursionError, which parse_event did not turn into
    InvalidEvent and the consumer did not catch, so each such message stayed unacknowledged
    and held a prefetch slot; ``prefetch`` of them stalled the consumer."""
    keys = export.put_instances(ct_series(inbox, 1))
    valid = ExportRequested(export_id=new_export_id(), destinations=("pacs",), object_keys=keys)
    nested = b"[" * 100_000 + b"]" * 100_000
    structured_body = structured(EXPORT_REQUESTED_TYPE, {}).replace(
        b'"data": {}', b'"data": ' + nested
    )
    binary_headers = {
        "ce-specversion": "1.0",
        "ce-id": "nested",
        "ce-source": "dicom-gateway://tests/hand-written",
        "ce-type": EXPORT_REQUESTED_TYPE,
    }
    prefetch = 4
    with Storescp(tmp_path / "pacs") as pacs, export.completions() as completions:
        export.start(export.config([destination("pacs", pacs.port)], prefetch=prefetch))
        for n in range(prefetch):
            if n % 2:
                export.publish_raw(nested, content_type="application/json", headers=binary_headers)
            else:
                export.publish_raw(structured_body, content_type=CONTENT_TYPE_STRUCTURED)
        export.publish(valid)
        (message,) = completions.wait_for(1, timeout=30)
        dead = export.dead_letters(prefetch, timeout=15)
    assert completed(message).status is ExportStatus.SUCCEEDED
    assert sorted(m.body for m in dead) == sorted([structured_body, nested] * (prefetch // 2))


def test_an_object_whose_file_meta_cannot_be_proposed_fails_alone(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    """Regression: pynetdicom's add_requested_context raised ValueError for a SOP class UID
    over 64 characters; it escaped send_batch and the request never completed."""
    good, source = ct_series(inbox, 2)
    long_sop_class = "1.2." + "3" * 70  # what pynetdicom refuses to propose (over 64 characters)
    bad = Instance(
        with_file_meta(source.path, tmp_path / "bad.dcm", sop_class_uid=long_sop_class),
        source.uids,
    )
    good_key, bad_key = export.put_instances([good, bad])
    request = ExportRequested(
        export_id=new_export_id(), destinations=("pacs",), object_keys=(good_key, bad_key)
    )
    with Storescp(tmp_path / "pacs") as pacs, export.completions() as completions:
        export.start(export.config([destination("pacs", pacs.port)]))
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=30)

    done = completed(message)
    assert done.status is ExportStatus.PARTIALLY_FAILED
    (result,) = done.destinations
    sent, failed = result.instances
    assert (sent.object_key, sent.status) == (good_key, InstanceOutcome.SENT)
    assert (failed.object_key, failed.status) == (bad_key, InstanceOutcome.FAILED)
    assert failed.error is not None
