"""The ``Dockerfile``, checked statically: a pinned base image, the console script as its
entry point, an unprivileged user on the data volume, every package copied."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest

from tests.support.compose_files import (
    REPO,
    dockerfile_args,
)


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_dockerfile_base_image_is_pinned() -> None:
    defaults = dict(arg.split("=", 1) for arg in dockerfile_args("ARG") if "=" in arg)
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], a.split()[0])
        for a in dockerfile_args("FROM")
    ]
    assert bases
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base


def test_dockerfile_entrypoint_is_the_console_script(pyproject: dict[str, Any]) -> None:
    (entrypoint,) = dockerfile_args("ENTRYPOINT")
    assert json.loads(entrypoint) == ["dicom-gateway"]
    assert "dicom-gateway" in pyproject["project"]["scripts"]
    assert json.loads(dockerfile_args("CMD")[-1]) == ["serve"]


def test_dockerfile_runs_unprivileged_on_the_data_volume() -> None:
    users = dockerfile_args("USER")
    assert users
    assert users[-1] not in {"root", "0"}
    assert dockerfile_args("WORKDIR")[-1] == "/data"
    assert any("/data" in volume for volume in dockerfile_args("VOLUME"))
    exposed = {int(port) for ports in dockerfile_args("EXPOSE") for port in ports.split()}
    assert exposed == {11112, 8080, 8081}
    (healthcheck,) = dockerfile_args("HEALTHCHECK")
    assert "python" in healthcheck
    assert "/healthz" in healthcheck


def test_dockerfile_copies_every_package_and_the_context_keeps_them(
    pyproject: dict[str, Any],
) -> None:
    included = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in included}
    copied = {copy.split()[0] for copy in dockerfile_args("COPY") if not copy.startswith("--")}
    assert packages <= copied
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "gateway-data"} <= ignored
    assert not (packages | {"pyproject.toml", "README.md"}) & ignored
