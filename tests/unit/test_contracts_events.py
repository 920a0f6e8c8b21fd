import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.events import AssociationReleased, StoredInstance
from contracts.keys import object_key

ASSOCIATION_ID = "3f1c2b9e-8d4a-4c6b-9e2f-1a2b3c4d5e6f"
OTHER_ASSOCIATION_ID = "9b7e4c1a-2f3d-4e5a-8b6c-7d8e9f0a1b2c"
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def instance_fields(sop: str, size: int, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "sop_instance_uid": sop,
        "sop_class_uid": CT_IMAGE_STORAGE,
        "transfer_syntax_uid": EXPLICIT_VR_LITTLE_ENDIAN,
        "study_instance_uid": STUDY,
        "series_instance_uid": SERIES,
        "object_key": object_key(ASSOCIATION_ID, STUDY, SERIES, sop),
        "size": size,
        "sha256": hashlib.sha256(sop.encode()).hexdigest(),
    }
    return fields | changes


def released_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "association_id": ASSOCIATION_ID,
        "called_ae_title": "GATEWAY",
        "calling_ae_title": "MODALITY1",
        "remote_host": "192.0.2.10",
        "remote_port": 40112,
        "pipeline": "default",
        "started_at": "2024-05-01T12:00:00Z",
        "released_at": "2024-05-01T12:00:07.250+02:00",
        "instance_count": 2,
        "total_bytes": 300,
        "bucket": "dicom-gateway",
        "instances": [
            instance_fields(f"{SERIES}.1", 100),
            instance_fields(f"{SERIES}.2", 200),
        ],
    }
    return fields | changes


def test_association_released_round_trips_through_json() -> None:
    released = AssociationReleased.model_validate(released_fields())
    assert released.started_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert [i.size for i in released.instances] == [100, 200]
    dumped = released.model_dump(mode="json")
    assert AssociationReleased.model_validate(dumped) == released
    assert AssociationReleased.model_validate_json(released.model_dump_json()) == released


def test_association_without_instances_is_valid() -> None:
    released = AssociationReleased.model_validate(
        released_fields(instance_count=0, total_bytes=0, instances=[])
    )
    assert released.instances == ()


def test_models_are_frozen() -> None:
    released = AssociationReleased.model_validate(released_fields())
    with pytest.raises(ValidationError, match="frozen"):
        released.pipeline = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"instance_count": 3}, "instance_count is 3 but 2 instances"),
        ({"instance_count": 1}, "instance_count is 1 but 2 instances"),
        ({"total_bytes": 299}, "total_bytes is 299 but the listed sizes add up to 300"),
        (
            {
                "instance_count": 1,
                "total_bytes": 5,
                "instances": [
                    instance_fields(
                        f"{SERIES}.1",
                        5,
                        object_key=object_key(OTHER_ASSOCIATION_ID, STUDY, SERIES, f"{SERIES}.1"),
                    )
                ],
            },
            "not under this association's prefix",
        ),
        ({"association_id": ASSOCIATION_ID.upper()}, "not a valid association id"),
        ({"pipeline": "a.b"}, "not a valid pipeline name"),
        ({"started_at": "2024-05-01T12:00:00"}, "timezone"),
        ({"released_at": "2024-05-01T12:00:07"}, "timezone"),
        ({"remote_port": 0}, "remote_port"),
        ({"remote_port": 65536}, "remote_port"),
        ({"called_ae_title": ""}, "called_ae_title"),
        ({"calling_ae_title": "A" * 17}, "calling_ae_title"),
        ({"bucket": ""}, "bucket"),
        ({"total_bytes": -1}, "total_bytes"),
        ({"unexpected": 1}, "Extra inputs are not permitted"),
    ],
)
def test_association_released_rejects(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        AssociationReleased.model_validate(released_fields(**changes))


@pytest.mark.parametrize(
    "missing",
    ["association_id", "pipeline", "started_at", "released_at", "instances", "bucket"],
)
def test_association_released_requires(missing: str) -> None:
    fields = released_fields()
    del fields[missing]
    with pytest.raises(ValidationError, match=missing):
        AssociationReleased.model_validate(fields)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"sha256": "A" * 64}, "sha256"),
        ({"sha256": "a" * 63}, "sha256"),
        ({"sha256": "a" * 64 + "\n"}, "sha256"),
        ({"size": -1}, "size"),
        ({"sop_class_uid": "1.2.840.010008"}, "not a valid DICOM UID"),
        ({"transfer_syntax_uid": "1.2.840.10008.1.2.1\n"}, "not a valid DICOM UID"),
        ({"study_instance_uid": "1.2.3"}, "does not name this instance"),
        ({"object_key": f"{ASSOCIATION_ID}/{STUDY}/../{SERIES}.1.dcm"}, "series instance UID"),
        ({"object_key": "x"}, "not an object key"),
    ],
)
def test_stored_instance_rejects(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        StoredInstance.model_validate(instance_fields(f"{SERIES}.1", 1) | changes)


def _not_well_formed(sop: str, **changes: Any) -> dict[str, Any]:
    fields = instance_fields(sop, 10, object_key=object_key(ASSOCIATION_ID, None, None, sop))
    del fields["study_instance_uid"], fields["series_instance_uid"]
    return fields | {"well_formed": False, "reason": "no Study Instance UID"} | changes


def test_a_well_formed_instance_is_written_as_before_the_flag_existed() -> None:
    # A consumer built on the earlier model (extra="forbid", study and series required) must
    # still read every well-formed instance: the new fields are left out of its JSON.
    instance = StoredInstance.model_validate(instance_fields(f"{SERIES}.1", 1))
    assert instance.well_formed is True
    assert instance.reason is None
    for dumped in (instance.model_dump(mode="json"), json.loads(instance.model_dump_json())):
        assert sorted(dumped) == sorted(instance_fields(f"{SERIES}.1", 1))


def test_an_instance_stored_as_received_says_so_and_round_trips() -> None:
    instance = StoredInstance.model_validate(_not_well_formed(f"{SERIES}.3"))
    dumped = json.loads(instance.model_dump_json())
    assert dumped["well_formed"] is False
    assert dumped["reason"] == "no Study Instance UID"
    assert "study_instance_uid" not in dumped  # absent, not null
    assert dumped["object_key"] == f"{ASSOCIATION_ID}/unknown/unknown/{SERIES}.3.dcm"
    assert StoredInstance.model_validate(dumped) == instance
    released = AssociationReleased.model_validate(
        released_fields(
            instances=[instance_fields(f"{SERIES}.1", 100), _not_well_formed(f"{SERIES}.3")],
            total_bytes=110,
        )
    )
    assert AssociationReleased.model_validate_json(released.model_dump_json()) == released


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (_not_well_formed(f"{SERIES}.3", reason=None), "reason is given exactly"),
        (_not_well_formed(f"{SERIES}.3", well_formed=True), "reason is given exactly"),
        (_not_well_formed(f"{SERIES}.3", well_formed=True, reason=None), "has a study"),
        (_not_well_formed(f"{SERIES}.3", reason=""), "reason"),
        (_not_well_formed(f"{SERIES}.3", reason="x" * 513), "reason"),
        (_not_well_formed(f"{SERIES}.3", study_instance_uid=STUDY), "does not name"),
        (instance_fields(f"{SERIES}.1", 1, study_instance_uid=None), "has a study"),
    ],
)
def test_the_well_formed_flag_its_reason_and_the_uids_agree(
    fields: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        StoredInstance.model_validate(fields)
