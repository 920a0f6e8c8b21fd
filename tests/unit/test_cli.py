"""The command line: configuration errors stop start-up with status 2 and name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dicom_gateway.cli import WaitProgress, main


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


def test_send_wait_progress_without_a_terminal_is_a_line_every_few_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    progress = WaitProgress("cli-1", "pacs")
    for elapsed in (1.0, 2.0, 5.2, 6.0, 10.3):
        progress(elapsed)
    progress.finish()
    assert capsys.readouterr().err.splitlines() == [
        "export cli-1 to pacs: waiting for its completion, 5 s",
        "export cli-1 to pacs: waiting for its completion, 10 s",
    ]


def test_events_without_a_local_event_log_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "none" / "events.sqlite3"
    monkeypatch.setenv("GATEWAY_BROKER__EVENT_LOG", str(log))
    assert main(["events"], environ={}) == 1
    assert str(log) in capsys.readouterr().err
