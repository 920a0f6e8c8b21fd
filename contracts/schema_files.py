"""The JSON Schemas checked in under ``contracts/schemas``, generated from the event models.

Pipelines written in other languages validate against these files. ``python -m
contracts.schema_files`` rewrites them after a model change; a unit test fails until it has.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

from pydantic import BaseModel

from contracts.events import AssociationReleased, StoredInstance
from contracts.export import ExportCompleted, ExportRequested
from contracts.studies import StudyStable

#: Directory of the schema files, inside the package so that they ship with it.
SCHEMA_DIR: Final = Path(__file__).parent / "schemas"
#: File name in :data:`SCHEMA_DIR` -> the model whose schema it holds.
SCHEMAS: Final[Mapping[str, type[BaseModel]]] = MappingProxyType(
    {
        "association.released.v1.json": AssociationReleased,
        # One line of an instance manifest (contracts.manifest).
        "association.instance.v1.json": StoredInstance,
        "study.stable.v1.json": StudyStable,
        "export.requested.v1.json": ExportRequested,
        "export.completed.v1.json": ExportCompleted,
    }
)


def render(model: type[BaseModel]) -> str:
    """The schema file text for ``model``: sorted keys so regenerating gives a stable diff."""
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema file into ``directory``; returns the paths written."""
    written = []
    for name, model in SCHEMAS.items():
        path = directory / name
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    """Rewrite the checked-in schema files from the models."""
    for path in write_schemas(SCHEMA_DIR):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
