"""The port file: what ``--port-file`` writes, all of it or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.errors import GatewayError
from gateway.port_file import listener_ports, write_port_file


def test_only_the_listeners_that_exist_are_written(tmp_path: Path) -> None:
    path = tmp_path / "ports.json"
    write_port_file(path, listener_ports(dicom=11112, http=None))
    assert json.loads(path.read_text()) == {"dicom": 11112}
    write_port_file(path, listener_ports(dicom=40001, http=40002))
    assert json.loads(path.read_text()) == {"dicom": 40001, "http": 40002}
    assert [p.name for p in tmp_path.iterdir()] == ["ports.json"]  # no temporary file left


def test_a_port_file_that_cannot_be_written_is_a_gateway_error(tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match="cannot write the port file"):
        write_port_file(tmp_path / "missing" / "ports.json", {"http": 8080})
    assert list(tmp_path.iterdir()) == []
