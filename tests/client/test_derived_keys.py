"""Derived objects get keys export accepts, apart from every received association."""

from __future__ import annotations

import pytest

from contracts import ExportRequested, InvalidObjectKey, new_association_id, parse_object_key
from gateway_client.keys import (
    derived_association_id,
    derived_object_key,
    is_derived_association_id,
)

SOURCE = "0b6c1f4e-2f4a-4a8e-9d55-1c2b3a4d5e6f"


def test_derived_key_follows_the_layout_and_export_accepts_it() -> None:
    key = derived_object_key(SOURCE, "secondary-capture", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    parts = parse_object_key(key)
    assert parts.association_id == derived_association_id(SOURCE, "secondary-capture")
    assert (parts.study_instance_uid, parts.sop_instance_uid) == ("1.2.3", "1.2.3.4.5")
    request = ExportRequested(export_id="e-1", destinations=("pacs",), object_keys=(key,))
    assert request.object_keys == (key,)


def test_derived_ids_are_stable_per_source_and_producer() -> None:
    first = derived_association_id(SOURCE, "a")
    assert derived_association_id(SOURCE, "a") == first
    assert derived_association_id(SOURCE, "b") != first
    assert derived_association_id(new_association_id(), "a") != first


def test_derived_ids_are_told_apart_from_received_associations() -> None:
    assert is_derived_association_id(derived_association_id(SOURCE, "a"))
    assert not is_derived_association_id(new_association_id())
    assert not is_derived_association_id("not-an-id")


@pytest.mark.parametrize(("source", "producer"), [("../etc", "a"), (SOURCE.upper(), "a")])
def test_derived_ids_need_a_real_association_id(source: str, producer: str) -> None:
    with pytest.raises(InvalidObjectKey):
        derived_association_id(source, producer)


def test_derived_ids_need_a_producer() -> None:
    with pytest.raises(ValueError, match="producer"):
        derived_association_id(SOURCE, "")
