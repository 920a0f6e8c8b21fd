"""The instance manifest: a claim check read back only when it is the object and list the event
names."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from contracts.errors import InvalidEvent, InvalidObjectKey
from contracts.events import AssociationReleased, InstanceManifest, StoredInstance
from contracts.keys import check_stored_key, is_manifest_key, manifest_key
from contracts.manifest import manifest_line, with_manifest_instances

ASSOCIATION = "0b5c8a6e-2f1d-4c3b-9a7e-5d4f3c2b1a09"
OTHER = "7e6d5c4b-3a29-4180-b7c6-d5e4f3a2b190"


def stored(n: int, association_id: str = ASSOCIATION) -> StoredInstance:
    return StoredInstance(
        sop_instance_uid=f"1.2.3.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.0",
        object_key=f"{association_id}/1.2.3/1.2.3.0/1.2.3.{n}.dcm",
        size=100 + n,
        sha256=f"{n:064x}",
    )


LISTED = [stored(1), stored(2), stored(3)]


def lines_of(instances: list[StoredInstance]) -> list[bytes]:
    return [manifest_line(instance) for instance in instances]


def event(lines: list[bytes], *, count: int = 3, total: int = 306) -> AssociationReleased:
    content = b"".join(lines)
    return AssociationReleased(
        association_id=ASSOCIATION,
        called_ae_title="GATEWAY",
        calling_ae_title="CT01",
        remote_host="127.0.0.1",
        remote_port=4000,
        pipeline="default",
        started_at="2026-12-07T10:00:00Z",
        released_at="2026-12-07T10:01:00Z",
        instance_count=count,
        total_bytes=total,
        bucket="images",
        instances=(),
        manifest=InstanceManifest(
            object_key=manifest_key(ASSOCIATION),
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
        ),
    )


def test_the_list_read_back_is_the_list_written() -> None:
    lines = lines_of(LISTED)
    listed = with_manifest_instances(event(lines), lines)
    assert listed.instances == tuple(LISTED)
    assert listed.manifest == event(lines).manifest


def with_line(line: bytes) -> Callable[[list[bytes]], list[bytes]]:
    return lambda lines: [*lines, line]


# Each case: what the lines the reader gets differ by from the object the event names.
ALTERED: dict[str, tuple[Callable[[list[bytes]], list[bytes]], str]] = {
    "a line more": (with_line(manifest_line(stored(4))), "not the object the event names"),
    "a line less": (lambda lines: lines[:-1], "not the object the event names"),
    "a byte changed": (
        lambda lines: [lines[0].replace(b"1.2.3.1", b"1.2.3.9"), *lines[1:]],
        "not the object the event names",
    ),
    "endless": (lambda lines: lines * 1000, "not the object the event names"),
}


@pytest.mark.parametrize("case", ALTERED)
def test_lines_that_are_not_the_named_object_are_refused(case: str) -> None:
    alter, message = ALTERED[case]
    lines = lines_of(LISTED)
    with pytest.raises(InvalidEvent, match=message):
        with_manifest_instances(event(lines), alter(lines))


# Each case: a manifest that is the named object, but does not list what the event announces.
MISMATCHED: dict[str, tuple[list[bytes], int, int, str]] = {
    "count": (lines_of(LISTED), 4, 306, "instance_count is 4"),
    "bytes": (lines_of(LISTED), 3, 999, "total_bytes is 999"),
    "another association's key": (
        lines_of([stored(1), stored(2), stored(3, OTHER)]),
        3,
        306,
        "not under this association's prefix",
    ),
    "not an instance": ([*lines_of(LISTED[:2]), b'{"size": 103}\n'], 3, 306, "line 3"),
}


@pytest.mark.parametrize("case", MISMATCHED)
def test_a_manifest_that_does_not_match_its_event_is_refused(case: str) -> None:
    lines, count, total, message = MISMATCHED[case]
    with pytest.raises(InvalidEvent, match=message):
        with_manifest_instances(event(lines, count=count, total=total), lines)


def test_an_event_without_manifest_has_none_to_read() -> None:
    lines = lines_of(LISTED)
    inline = event(lines).model_copy(update={"manifest": None, "instances": tuple(LISTED)})
    with pytest.raises(InvalidEvent, match="has no manifest"):
        with_manifest_instances(inline, lines)


def test_a_manifest_must_be_under_its_own_association() -> None:
    lines = lines_of(LISTED)
    data = event(lines).model_dump()
    data["manifest"]["object_key"] = manifest_key(OTHER)
    with pytest.raises(ValueError, match="is not"):
        AssociationReleased.model_validate(data)


@pytest.mark.parametrize(
    ("key", "is_manifest"),
    [
        (f"{ASSOCIATION}/instances.jsonl", True),
        (f"{ASSOCIATION}/1.2/1.2.3/1.2.3.4.dcm", False),
        ("not-an-id/instances.jsonl", False),
        (f"{ASSOCIATION}/x/instances.jsonl", False),
        (f"../{ASSOCIATION}/instances.jsonl", False),
    ],
)
def test_manifest_keys(key: str, is_manifest: bool) -> None:
    assert is_manifest_key(key) is is_manifest


@pytest.mark.parametrize(
    "key", [f"{ASSOCIATION}/instances.json", f"{ASSOCIATION}/../instances.jsonl", "/etc/passwd"]
)
def test_only_object_and_manifest_keys_are_stored_keys(key: str) -> None:
    check_stored_key(manifest_key(ASSOCIATION))
    check_stored_key(stored(1).object_key)
    with pytest.raises(InvalidObjectKey):
        check_stored_key(key)
