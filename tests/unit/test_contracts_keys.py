import uuid

import pytest

from contracts.errors import ContractError, InvalidObjectKey
from contracts.keys import (
    UNKNOWN_UID_SEGMENT,
    ObjectKeyParts,
    association_prefix,
    is_valid_association_id,
    is_valid_uid,
    new_association_id,
    object_key,
    parse_object_key,
)

ASSOCIATION_ID = "3f1c2b9e-8d4a-4c6b-9e2f-1a2b3c4d5e6f"
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
SOP = "1.2.826.0.1.3680043.8.498.3"


@pytest.mark.parametrize(
    ("uid", "valid"),
    [
        ("1.2.840.10008.1.2.1", True),
        ("0", True),
        ("1.0.3", True),
        ("1.20.3", True),
        ("2.25.161472372394163815240196838036926354915", True),
        ("1." + "2" * 62, True),  # 64 characters
        ("1." + "2" * 63, False),  # 65 characters
        ("1.02.3", False),
        ("01.2", False),
        ("1.00", False),
        ("1..2", False),
        (".1.2", False),
        ("1.2.", False),
        ("", False),
        ("1.2.a", False),
        ("1.2.3\n", False),
        (" 1.2", False),
        ("\u0661.\u0662", False),  # Arabic-Indic digits are digits to str.isdigit, not to DICOM
        ("../../x", False),
        ("1.2/3", False),
    ],
)
def test_is_valid_uid(uid: str, valid: bool) -> None:
    assert is_valid_uid(uid) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (ASSOCIATION_ID, True),
        ("00000000-0000-0000-0000-000000000000", True),
        (ASSOCIATION_ID.upper(), False),
        (ASSOCIATION_ID.replace("-", ""), False),
        ("{" + ASSOCIATION_ID + "}", False),
        ("urn:uuid:" + ASSOCIATION_ID, False),
        (ASSOCIATION_ID + "\n", False),
        (ASSOCIATION_ID[:-1], False),
        ("../" + ASSOCIATION_ID[3:], False),
        ("", False),
    ],
)
def test_is_valid_association_id(value: str, valid: bool) -> None:
    assert is_valid_association_id(value) is valid


def test_new_association_id_is_a_fresh_valid_uuid4() -> None:
    first, second = new_association_id(), new_association_id()
    assert is_valid_association_id(first)
    assert uuid.UUID(first).version == 4
    assert first != second


def test_object_key_layout() -> None:
    key = object_key(ASSOCIATION_ID, STUDY, SERIES, SOP)
    assert key == f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/{SOP}.dcm"
    assert key.startswith(association_prefix(ASSOCIATION_ID))


def test_association_prefix() -> None:
    assert association_prefix(ASSOCIATION_ID) == f"{ASSOCIATION_ID}/"


def test_association_prefix_rejects_an_invalid_association_id() -> None:
    with pytest.raises(InvalidObjectKey, match="not a valid association id"):
        association_prefix("..")


@pytest.mark.parametrize(
    "parts",
    [
        ObjectKeyParts(ASSOCIATION_ID, STUDY, SERIES, SOP),
        ObjectKeyParts(ASSOCIATION_ID, "0", "0", "0"),
        ObjectKeyParts(new_association_id(), "1." + "2" * 62, "1.2", "1.2.3"),
    ],
)
def test_parse_object_key_inverts_object_key(parts: ObjectKeyParts) -> None:
    assert parse_object_key(object_key(*parts)) == parts


@pytest.mark.parametrize(
    ("parts", "match"),
    [
        ((ASSOCIATION_ID.upper(), STUDY, SERIES, SOP), "association id"),
        (("..", STUDY, SERIES, SOP), "association id"),
        ((ASSOCIATION_ID, "..", SERIES, SOP), "study instance UID"),
        ((ASSOCIATION_ID, STUDY, "1.2/3", SOP), "series instance UID"),
        ((ASSOCIATION_ID, STUDY, SERIES, "../../x"), "SOP instance UID"),
        ((ASSOCIATION_ID, STUDY, SERIES, ""), "SOP instance UID"),
        ((ASSOCIATION_ID, STUDY, SERIES, "1.02"), "SOP instance UID"),
    ],
)
def test_object_key_rejects_invalid_parts(parts: tuple[str, str, str, str], match: str) -> None:
    with pytest.raises(InvalidObjectKey, match=match):
        object_key(*parts)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "a/b/c",
        f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/{SOP}",
        f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/{SOP}.DCM",
        f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/{SOP}.dcm.dcm",
        f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/.dcm",
        f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/{SOP}.dcm/",
        f"/{ASSOCIATION_ID}/{STUDY}/{SERIES}/{SOP}.dcm",
        f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/extra/{SOP}.dcm",
        f"{ASSOCIATION_ID}//{SERIES}/{SOP}.dcm",
        f"../{STUDY}/{SERIES}/{SOP}.dcm",
        f"{ASSOCIATION_ID}/../{SERIES}/{SOP}.dcm",
        f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/..\\{SOP}.dcm",
        f"{ASSOCIATION_ID.upper()}/{STUDY}/{SERIES}/{SOP}.dcm",
        f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/{SOP}.dcm\n",
    ],
)
def test_parse_object_key_rejects(key: str) -> None:
    with pytest.raises(InvalidObjectKey):
        parse_object_key(key)


def test_invalid_object_key_is_a_contract_error() -> None:
    # Callers catch ContractError (or ValueError, e.g. inside pydantic validators) at boundaries.
    assert issubclass(InvalidObjectKey, ContractError)
    assert issubclass(ContractError, ValueError)


@pytest.mark.parametrize(
    ("study", "series", "key"),
    [
        (STUDY, SERIES, f"{ASSOCIATION_ID}/{STUDY}/{SERIES}/{SOP}.dcm"),
        (None, SERIES, f"{ASSOCIATION_ID}/unknown/{SERIES}/{SOP}.dcm"),
        (STUDY, None, f"{ASSOCIATION_ID}/{STUDY}/unknown/{SOP}.dcm"),
        (None, None, f"{ASSOCIATION_ID}/unknown/unknown/{SOP}.dcm"),
    ],
)
def test_a_missing_study_or_series_uid_is_the_unknown_segment(
    study: str | None, series: str | None, key: str
) -> None:
    # An instance stored although its data set has no valid study or series UID
    # (ingest.malformed_instances = "store"): the key keeps four segments and names the SOP
    # instance, and parsing it gives None back where the UID was missing.
    assert UNKNOWN_UID_SEGMENT == "unknown"
    assert not is_valid_uid(UNKNOWN_UID_SEGMENT)
    assert object_key(ASSOCIATION_ID, study, series, SOP) == key
    assert parse_object_key(key) == ObjectKeyParts(ASSOCIATION_ID, study, series, SOP)


@pytest.mark.parametrize(
    "key",
    [
        f"{ASSOCIATION_ID}/unknown/unknown/unknown.dcm",  # the SOP instance is never unknown
        f"{ASSOCIATION_ID}/Unknown/{SERIES}/{SOP}.dcm",
        f"{ASSOCIATION_ID}/unknown-study/{SERIES}/{SOP}.dcm",
        f"{ASSOCIATION_ID}/{STUDY}/unknown /{SOP}.dcm",
        f"{ASSOCIATION_ID}/unknown/{SOP}.dcm",
        f"{ASSOCIATION_ID}//unknown/{SOP}.dcm",
    ],
)
def test_parse_object_key_takes_the_unknown_segment_only_for_study_and_series(key: str) -> None:
    with pytest.raises(InvalidObjectKey):
        parse_object_key(key)


def test_object_key_still_refuses_an_invalid_study_or_series_uid() -> None:
    # None stands for "missing or invalid"; an invalid UID itself never reaches a key.
    with pytest.raises(InvalidObjectKey, match="study instance UID"):
        object_key(ASSOCIATION_ID, UNKNOWN_UID_SEGMENT, SERIES, SOP)
    with pytest.raises(InvalidObjectKey, match="SOP instance UID"):
        object_key(ASSOCIATION_ID, None, None, "")
