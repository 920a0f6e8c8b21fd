"""The pynetdicom the extensions are written for is the one installed, every name of it they use
exists, and another version or a missing name stops start-up with a message that says what to
install, configure or re-check."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
import types
from importlib.metadata import version
from pathlib import Path

import pynetdicom
import pytest

from gateway.errors import IncompatibleLibrary
from gateway.netdicom.compat import PINNED_VERSION, REACHES, Reach, check, missing, required
from gateway_client.testing import gateway_environment

ROOT = Path(__file__).resolve().parents[2]


def _installed_modules() -> dict[str, types.ModuleType]:
    return {reach.module: importlib.import_module(reach.module) for reach in REACHES}


def test_the_installed_pynetdicom_is_the_pinned_one() -> None:
    assert pynetdicom.__version__ == version("pynetdicom") == PINNED_VERSION


def test_the_project_pins_the_same_pynetdicom() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert f"pynetdicom=={PINNED_VERSION}" in project["project"]["dependencies"]


@pytest.mark.parametrize("reach", REACHES, ids=lambda reach: f"{reach.module}.{reach.name}")
def test_every_name_the_extensions_use_exists(reach: Reach) -> None:
    assert missing((reach,), _installed_modules()) == []


@pytest.mark.parametrize("mode", ["prompt", "plain"])
def test_the_installed_pynetdicom_passes_the_start_up_check(mode: str) -> None:
    check(mode, pynetdicom.__version__, _installed_modules())  # type: ignore[arg-type]


def test_plain_mode_needs_a_subset_of_the_names() -> None:
    plain = required("plain")
    assert plain
    assert set(plain) < set(required("prompt"))
    assert all(reach.plain for reach in plain)


def test_another_version_fails_saying_what_to_install_or_configure() -> None:
    with pytest.raises(IncompatibleLibrary) as failure:
        check("prompt", "3.1.0", _installed_modules())
    message = str(failure.value)
    assert "pynetdicom 3.1.0 is installed" in message
    assert f"install pynetdicom=={PINNED_VERSION}" in message
    assert 'set netdicom = "plain"' in message
    assert "re-check each name in gateway/netdicom/compat.py" in message


def test_plain_mode_runs_on_another_version() -> None:
    check("plain", "3.1.0", _installed_modules())


def _without(module_name: str, owner: str, attribute: str | None) -> dict[str, types.ModuleType]:
    """pynetdicom's modules, with ``owner.attribute`` (or ``owner``) gone from one of them."""
    modules = _installed_modules()
    fake = types.ModuleType(module_name)
    fake.__dict__.update(vars(modules[module_name]))
    if attribute is None:
        del fake.__dict__[owner]
    else:
        original = getattr(fake, owner)
        # The same class (its bases, its source), less the attribute: a subclass would still
        # inherit it.
        dropped = {attribute, "__dict__", "__weakref__"}
        namespace = {k: v for k, v in vars(original).items() if k not in dropped}
        setattr(fake, owner, type(owner, original.__bases__, namespace))
    modules[module_name] = fake
    return modules


def test_a_renamed_method_fails_naming_it_and_what_uses_it() -> None:
    modules = _without("pynetdicom.dul", "DULServiceProvider", "_is_transport_event")
    with pytest.raises(IncompatibleLibrary) as failure:
        check("prompt", PINNED_VERSION, modules)
    message = str(failure.value)
    assert (
        "pynetdicom.dul.DULServiceProvider._is_transport_event "
        "(used by gateway/netdicom/prompt_dul.py)"
    ) in message
    assert 'set netdicom = "plain"' in message  # plain mode does not need it
    check("plain", PINNED_VERSION, modules)


def test_a_missing_name_that_plain_mode_needs_fails_in_plain_mode_too() -> None:
    modules = _without("pynetdicom._config", "STORE_RECV_CHUNKED_DATASET", None)
    with pytest.raises(IncompatibleLibrary) as failure:
        check("plain", PINNED_VERSION, modules)
    message = str(failure.value)
    assert "pynetdicom._config.STORE_RECV_CHUNKED_DATASET (used by gateway/netdicom/modes.py)" in (
        message
    )
    assert f"install pynetdicom=={PINNED_VERSION} (plain mode needs these names too)" in message
    assert 'set netdicom = "plain"' not in message


class _Base:
    def __init__(self) -> None:
        self._set_in_base = 1


class _Provider(_Base):
    def __init__(self) -> None:
        super().__init__()
        self._mine, self._unpacked = 1, 2
        self._annotated: int = 3

    def method(self, request_handler: object = None) -> None:
        self._set_later = request_handler


_FAKE = types.ModuleType("fake")
_FAKE.__dict__.update(Provider=_Provider, FLAG=True)


@pytest.mark.parametrize(
    ("name", "exists"),
    [
        ("FLAG", True),
        ("GONE", False),
        ("Provider.method", True),
        ("Provider._set_in_base", True),  # set by a base class
        ("Provider._mine", True),
        ("Provider._unpacked", True),
        ("Provider._annotated", True),
        ("Provider._set_later", True),  # set outside __init__
        ("Provider._gone", False),
        ("Provider.method(request_handler)", True),
        ("Provider.method(other)", False),
        ("Gone.method", False),
    ],
)
def test_what_counts_as_a_name_that_exists(name: str, exists: bool) -> None:
    reach = Reach("fake", name, "test")
    assert missing((reach,), {"fake": _FAKE}) == ([] if exists else [reach])


def test_a_service_on_another_pynetdicom_exits_2_saying_what_to_do(tmp_path: Path) -> None:
    """What an operator sees: ``dicom-gateway ingest`` refuses to start."""
    program = (
        "import sys, pynetdicom\n"
        "pynetdicom.__version__ = '3.1.0'\n"
        "from dicom_gateway.cli import main\n"
        "sys.exit(main(['ingest']))\n"
    )
    environment = {**gateway_environment(), "GATEWAY_HTTP__INGEST_PORT": "0"}
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"install pynetdicom=={PINNED_VERSION}, or set netdicom" in result.stderr
    assert not (tmp_path / "gateway-data").exists()  # stopped before it touched anything
