"""What importing the contract and the plugin drags in, checked in a fresh interpreter.

A pipeline depends on ``contracts`` without pulling in the gateway's services or their
libraries, and pytest imports the plugin in every run of an environment where the package is
installed, so both must stay light.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import gateway_client

SERVICE_LIBRARIES = ("aio_pika", "aiormq", "minio", "pynetdicom", "pydicom", "urllib3")
OUR_PACKAGES = ("gateway", "ingest", "export", "gateway_client")


def imported_after(statement: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter has loaded after ``statement``."""
    script = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return {name.split(".")[0] for name in json.loads(completed.stdout)}


def test_contracts_imports_only_pydantic_and_cloudevents() -> None:
    loaded = imported_after("import contracts")
    assert {"pydantic", "cloudevents"} <= loaded
    assert not loaded & {*SERVICE_LIBRARIES, *OUR_PACKAGES}


@pytest.mark.parametrize("module", ["gateway_client", "gateway_client.pytest_plugin"])
def test_plugin_import_is_cheap(module: str) -> None:
    loaded = imported_after(f"import {module}")
    assert not loaded & {*SERVICE_LIBRARIES, "gateway", "contracts", "testcontainers"}


def test_every_name_the_client_offers_is_there_on_first_use() -> None:
    assert sorted(gateway_client.__all__) == sorted(gateway_client._WHERE)
    missing = [name for name in gateway_client.__all__ if not hasattr(gateway_client, name)]
    assert not missing
