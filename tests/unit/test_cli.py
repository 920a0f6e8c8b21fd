"""The command line: configuration errors stop start-up with status 2 and name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main


def test_invalid_configuration_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[ingest]\nmax_associations = 5000\n")
    assert main(["ingest", "--config", str(config)], environ={}) == 2
    assert "ingest.max_associations" in capsys.readouterr().err


def test_config_file_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[ingest]\nport = 10104\n")
    assert main(["check-config"], environ={"GATEWAY_CONFIG": str(config)}) == 0
    assert json.loads(capsys.readouterr().out)["ingest"]["port"] == 10104


def test_check_config_hides_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[storage]\nsecret_key = "s3cr3t"\n[broker]\nurl = "amqp://gw:hunter2@rabbit:5672/prod"\n'
    )
    assert main(["check-config", "--config", str(config)], environ={}) == 0
    out = capsys.readouterr().out
    assert "s3cr3t" not in out
    assert "hunter2" not in out
    assert json.loads(out)["broker"]["url"] == "amqp://gw:***@rabbit:5672/prod"
