"""Only gateway/netdicom reaches into pynetdicom's internals, read from the source.

Everywhere else uses netdicom's API and pynetdicom's public one: no import of an internal
module (``_config``, ``dul``, ``transport``, ``pdu_primitives``...), no private name of
pynetdicom's (``ae._servers``, ``getattr(sock, "_is_connected")``...), no reach into an
association's providers (``assoc.dul``, ``.dimse``, ``.acse``), and no subclass of a pynetdicom
class (an extension of pynetdicom belongs in netdicom, where compat.py checks what it uses).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pynetdicom
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The packages that ship; tests and benchmarks drive pynetdicom as a peer and may reach in.
PACKAGES = ("contracts", "gateway", "ingest", "export", "gateway_client", "dicom_gateway")
NETDICOM = ROOT / "gateway" / "netdicom"
#: pynetdicom's public API: its package, and the modules its documentation presents to users.
PUBLIC_MODULES = frozenset(
    {
        "pynetdicom",
        "pynetdicom.association",
        "pynetdicom.dimse_primitives",
        "pynetdicom.events",
        "pynetdicom.presentation",
        "pynetdicom.sop_class",
        "pynetdicom.status",
    }
)
#: An association's service providers: reaching them is reaching into pynetdicom's layers.
PROVIDERS = frozenset({"dul", "dimse", "acse"})
_ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


@functools.cache
def pynetdicom_private_names() -> frozenset[str]:
    """Every ``_name`` (not ``__dunder__``) that pynetdicom's source defines or uses."""
    names: set[str] = set()
    for path in Path(pynetdicom.__file__).parent.rglob("*.py"):
        if {"tests", "apps"} & set(path.parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return frozenset(n for n in names if n.startswith("_") and not n.startswith("__"))


def _is_internal_module(name: str) -> bool:
    return name.startswith("pynetdicom.") and name not in PUBLIC_MODULES


def _submodule(name: str) -> bool:
    return (Path(pynetdicom.__file__).parent / f"{name}.py").is_file()


def reaches(source: str) -> list[str]:
    """What the module with ``source`` reaches into pynetdicom for, one line each."""
    tree = ast.parse(source)
    found: list[str] = []
    from_pynetdicom: set[str] = set()
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [
                f"{line}: import {alias.name}"
                for alias in node.names
                if _is_internal_module(alias.name)
            ]
            from_pynetdicom |= {
                alias.asname or alias.name for alias in node.names if alias.name == "pynetdicom"
            }
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pynetdicom"):
            module = node.module or ""
            if _is_internal_module(module):
                found.append(f"{line}: from {module} import ...")
            for alias in node.names:
                from_pynetdicom.add(alias.asname or alias.name)
                full = f"{module}.{alias.name}"
                if module == "pynetdicom" and _submodule(alias.name) and _is_internal_module(full):
                    found.append(f"{line}: from pynetdicom import {alias.name}")
        elif isinstance(node, ast.Attribute):
            receiver = node.value.id if isinstance(node.value, ast.Name) else None
            if node.attr in pynetdicom_private_names() and receiver not in {"self", "cls"}:
                found.append(f"{line}: .{node.attr}")
            elif node.attr in PROVIDERS:
                found.append(f"{line}: .{node.attr} (an association's provider)")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _ATTRIBUTE_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in pynetdicom_private_names() | PROVIDERS
        ):
            found.append(f"{line}: {node.func.id}(..., {node.args[1].value!r})")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                root = base
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and root.id in from_pynetdicom:
                    found.append(f"{node.lineno}: class {node.name} extends pynetdicom's")
    return sorted(found, key=lambda text: int(text.split(":")[0]))


def _modules() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if not path.is_relative_to(NETDICOM)
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_nothing_outside_netdicom_reaches_into_pynetdicom(package: str) -> None:
    found = {
        str(path.relative_to(ROOT)): reaches(path.read_text(encoding="utf-8"))
        for path in _modules()
        if path.is_relative_to(ROOT / package)
    }
    found = {module: lines for module, lines in found.items() if lines}
    assert not found, f"move these into gateway/netdicom (and compat.py): {found}"


def test_the_check_sees_each_kind_of_reach() -> None:
    source = """
import pynetdicom.dul
from pynetdicom import _config, AE, evt
from pynetdicom import transport as pynetdicom_transport
from pynetdicom.dimse_messages import NamedTemporaryFile
from pynetdicom.association import Association

def f(ae, assoc, sock, event):
    ae._servers.append(None)
    getattr(sock, "_is_connected", False)
    assoc.dul.socket
    assoc.acse.send_reject(1, 1, 1)

class Acceptor(AE):
    pass

class Server(pynetdicom_transport.ThreadedAssociationServer):
    def f(self):
        return self._handlers
"""
    assert reaches(source) == [
        "2: import pynetdicom.dul",
        "3: from pynetdicom import _config",
        "4: from pynetdicom import transport",
        "5: from pynetdicom.dimse_messages import ...",
        "9: ._servers",
        "10: getattr(..., '_is_connected')",
        "11: .dul (an association's provider)",
        "12: .acse (an association's provider)",
        "14: class Acceptor extends pynetdicom's",
        "17: class Server extends pynetdicom's",
    ]


def test_public_api_and_our_own_private_names_pass() -> None:
    source = """
from pynetdicom import AE, evt, build_context
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

class Table:
    def __init__(self):
        self._lock = None

    def f(self, assoc: Association):
        return self._lock, assoc.is_established, assoc.requestor.ae_title
"""
    assert reaches(source) == []
