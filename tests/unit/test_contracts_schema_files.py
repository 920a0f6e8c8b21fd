import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from contracts.events import AssociationReleased
from contracts.schema_files import SCHEMA_DIR, SCHEMAS, render, write_schemas

REGENERATE = "the models changed: run `python -m contracts.schema_files` and commit the diff"


@pytest.mark.parametrize(("name", "model"), SCHEMAS.items())
def test_checked_in_schema_matches_the_model(name: str, model: type[BaseModel]) -> None:
    path = SCHEMA_DIR / name
    assert path.is_file(), f"{name} is missing: {REGENERATE}"
    assert path.read_text(encoding="utf-8") == render(model), f"{name} is stale: {REGENERATE}"


def test_every_schema_file_has_a_model() -> None:
    assert {path.name for path in SCHEMA_DIR.glob("*.json")} == set(SCHEMAS)


def test_association_released_schema_documents_every_field() -> None:
    schema = json.loads(render(AssociationReleased))
    assert schema["additionalProperties"] is False
    undocumented = [
        name
        for properties in (
            schema["properties"],
            schema["$defs"]["StoredInstance"]["properties"],
            schema["$defs"]["InstanceManifest"]["properties"],
        )
        for name, field in properties.items()
        if not field.get("description")
    ]
    assert undocumented == []
    # Only the claim check is optional: events that list their instances inline omit it.
    assert set(schema["required"]) == set(AssociationReleased.model_fields) - {"manifest"}


def test_write_schemas_writes_the_rendered_schemas(tmp_path: Path) -> None:
    written = write_schemas(tmp_path)
    assert sorted(path.name for path in written) == sorted(SCHEMAS)
    for path in written:
        assert path.read_text(encoding="utf-8") == render(SCHEMAS[path.name])
