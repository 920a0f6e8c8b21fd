"""The README's module map (its "Development" section) names every module of the packages, so
that a newcomer finds each file's place; a new module without a line there fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dicom_gateway", "ingest", "export", "gateway", "contracts", "gateway_client")
#: Modules that hold no code of their own worth a line.
UNNAMED = frozenset({"__init__", "__main__"})


def module_map() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Development\n", 1)[1]
    return section.split("\n```\n", 2)[1]


def test_the_module_map_names_every_module() -> None:
    named = set(re.findall(r"[a-z_0-9]+", module_map()))
    modules = {
        path.relative_to(ROOT).as_posix(): path.stem
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.stem not in UNNAMED
    }
    missing = sorted(path for path, stem in modules.items() if stem not in named)
    assert not missing, f"README.md's module map does not name: {missing}"
