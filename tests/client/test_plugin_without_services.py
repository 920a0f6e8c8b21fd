"""Without GATEWAY_TEST_* and without Docker, ``gateway_services`` says what to set.

Run as a separate pytest process over a pipeline's test file, as a pipeline's own suite
would run: the plugin is found through its entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINE_TEST = """
def test_needs_services(gateway_services):
    raise AssertionError("gateway_services should not have been given")
"""


@pytest.mark.parametrize(("setting", "outcome"), [("fail", "1 error"), ("skip", "1 skipped")])
def test_missing_services_fail_or_skip_with_the_variables_to_set(
    tmp_path: Path, setting: str, outcome: str, refusing_port: int
) -> None:
    (tmp_path / "test_pipeline.py").write_text(PIPELINE_TEST)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_TEST_")}
    environment.pop("DOCKER_TLS_VERIFY", None)
    environment["DOCKER_HOST"] = f"tcp://127.0.0.1:{refusing_port}"  # nothing answers there
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rs",
            "-o",
            f"dicom_gateway_missing_services={setting}",
            "test_pipeline.py",
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert outcome in output, output
    assert "GATEWAY_TEST_AMQP_URL is not set and no Docker engine answers" in output, output
