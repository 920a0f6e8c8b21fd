"""Each command imports only what it runs, and the embedded bus and file storage load neither
aio-pika nor minio-py: every start of a service pays for every module it imports (the test
suite alone starts hundreds of gateway processes)."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Module imported -> top-level packages it must not load.
NOT_LOADED = {
    "dicom_gateway.cli": {"ingest", "export", "pynetdicom", "pydicom", "aio_pika", "minio"},
    "ingest.app": {"export", "aio_pika", "minio"},
    "export.app": {"ingest", "aio_pika", "minio"},
}


def loaded_packages(module: str) -> set[str]:
    """The top-level packages in ``sys.modules`` after importing ``module`` in a fresh process."""
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return {name.split(".")[0] for name in result.stdout.split()}


@pytest.mark.parametrize("module", sorted(NOT_LOADED))
def test_importing_a_command_loads_only_what_it_needs(module: str) -> None:
    assert loaded_packages(module) & NOT_LOADED[module] == set()
