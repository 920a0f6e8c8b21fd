"""The command line: configuration errors stop start-up with status 2 and name the field (or
the variable); so does an argument a command cannot use, in one line, before anything is sent."""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path

import pytest

from dicom_gateway.cli import LogLevel, WaitProgress, log_level, main
from gateway.settings import GatewaySettings


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


ASSOCIATION = "0b6c1f4e-2f4a-4a8e-9d55-1c2b3a4d5e6f"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["send", "--to", "example", "--association", "hello"],
            "dicom-gateway send: --association: 'hello' is not a valid association id",
        ),
        (
            ["send", "--to", "example", "foo/bar.dcm"],
            "dicom-gateway send: object key: 'foo/bar.dcm' is not an object key (<association-id>/",
        ),
        (
            ["send", "--to", "pacs", "--association", ASSOCIATION],
            "dicom-gateway send: unknown destination 'pacs' (known: example)",
        ),
        (
            ["send", "--to", "example"],
            "dicom-gateway send: give either --association ID or one or more object keys",
        ),
        (
            ["send", "--to", "example", "--association", ASSOCIATION, f"{ASSOCIATION}/1/2/3.dcm"],
            "dicom-gateway send: give either --association ID or one or more object keys",
        ),
        (["echo", "pacs"], "dicom-gateway echo: unknown destination 'pacs' (known: example)"),
    ],
    ids=["association id", "object key", "destination", "neither", "both", "echo destination"],
)
def test_what_a_command_cannot_use_is_one_line_and_status_2_before_anything_is_sent(
    argv: list[str],
    said: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event_log = tmp_path / "events.sqlite3"
    monkeypatch.setenv("GATEWAY_BROKER__EVENT_LOG", str(event_log))
    assert main([*argv, "--wait"] if argv[0] == "send" else argv, environ={}) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith(said)
    assert captured.out == ""
    assert not event_log.exists()  # nothing published


def test_version_is_the_installed_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"], environ={})
    assert exited.value.code == 0
    assert (
        capsys.readouterr().out == f"dicom-gateway {importlib.metadata.version('dicom-gateway')}\n"
    )


@pytest.mark.parametrize(
    "command", ["serve", "ingest", "export", "events", "echo", "send", "check-config"]
)
def test_every_subcommand_takes_log_level_and_says_so(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"], environ={})
    assert exited.value.code == 0
    assert "--log-level {DEBUG,INFO,WARNING,ERROR}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["check-config", "--log-level", "DEBUG"], logging.DEBUG),
        (["--log-level", "ERROR", "check-config"], logging.ERROR),
        (["--log-level", "ERROR", "check-config", "--log-level", "WARNING"], logging.WARNING),
        (["check-config"], logging.INFO),
    ],
)
def test_log_level_before_or_after_the_subcommand(argv: list[str], level: int) -> None:
    assert main(argv, environ={}) == 0
    assert logging.getLogger().level == level


@pytest.mark.parametrize(
    ("command", "given", "configured", "level"),
    [
        ("send", None, None, "WARNING"),
        ("echo", None, None, "WARNING"),
        ("send", "INFO", None, "INFO"),
        ("send", None, "DEBUG", "DEBUG"),
        ("serve", None, None, "INFO"),
        ("events", None, None, "INFO"),
        ("ingest", "ERROR", "DEBUG", "ERROR"),
    ],
)
def test_the_log_level_of_each_command(
    command: str, given: LogLevel | None, configured: LogLevel | None, level: str
) -> None:
    settings = GatewaySettings() if configured is None else GatewaySettings(log_level=configured)
    assert log_level(command, given, settings) == level


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (
            "GATEWAY_INGEST__AE",
            '[{"ae_title": "CT"',
            "dicom-gateway: invalid configuration: environment variable GATEWAY_INGEST__AE is "
            "not valid JSON (",
        ),
        (
            "GATEWAY_BROKR__URL",
            "amqp://rabbit",
            "dicom-gateway: invalid configuration: environment variable GATEWAY_BROKR__URL: "
            "'brokr' is not a section of the configuration (broker, export, http, ingest, "
            "storage)",
        ),
    ],
    ids=["bad JSON", "unknown section"],
)
def test_a_wrong_environment_variable_is_named(
    variable: str,
    value: str,
    said: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["check-config"], environ={}) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(said)
