"""The package layers, read from the source: which of our packages may import which.

From the bottom up: ``contracts`` (the wire contract) imports none of ours; ``gateway`` (the
shared kernel) only the contract; the two services the kernel and the contract, never each
other; ``dicom_gateway`` (the command, the composition root) sits above both services. The
pipeline client stands beside the services and may not import them either. A pipeline (the
example in ``examples/``) imports only the client and the contract. Every import counts, also
those inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: For each package, the packages of ours its modules may import.
ALLOWED: dict[str, frozenset[str]] = {
    "contracts": frozenset({"contracts"}),
    "gateway": frozenset({"contracts", "gateway"}),
    "ingest": frozenset({"contracts", "gateway", "ingest"}),
    "export": frozenset({"contracts", "gateway", "export"}),
    "gateway_client": frozenset({"contracts", "gateway", "gateway_client"}),
    "dicom_gateway": frozenset({"contracts", "gateway", "ingest", "export", "dicom_gateway"}),
}
OURS = frozenset({*ALLOWED, "bench", "tests", "examples"})
#: What pipeline code may import of ours; the standard library and other libraries are free.
PIPELINE_ALLOWED = frozenset({"contracts", "gateway_client"})


def imported_packages(path: Path) -> set[str]:
    """The top-level packages of ours that the module at ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


def arrows(package: str) -> dict[str, set[str]]:
    """Module path -> the packages of ours it imports, for every module of ``package``."""
    return {
        str(path.relative_to(ROOT)): imported_packages(path)
        for path in sorted((ROOT / package).rglob("*.py"))
    }


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    forbidden = {
        module: sorted(imports - ALLOWED[package])
        for module, imports in arrows(package).items()
        if imports - ALLOWED[package]
    }
    assert not forbidden, f"{package} may import only {sorted(ALLOWED[package])}: {forbidden}"


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*.py")), ids=lambda path: path.name
)
def test_the_example_pipeline_imports_only_the_client_and_the_contract(example: Path) -> None:
    forbidden = sorted(imported_packages(example) - PIPELINE_ALLOWED)
    assert not forbidden, f"a pipeline may import only {sorted(PIPELINE_ALLOWED)}: {forbidden}"


def test_every_package_of_ours_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"bench", "tests"} == set(ALLOWED)


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text("def f():\n    from ingest.app import run\n    import export.scu\n")
    assert imported_packages(module) == {"ingest", "export"}
