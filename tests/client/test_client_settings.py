"""The client's settings: the gateway's TOML file and ``GATEWAY_*`` variables, its two sections."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import gateway_client
from gateway.settings import GatewaySettings, load_settings
from gateway_client import ClientSettings, ConfigError, PipelineClient

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

FULL = """
log_level = "DEBUG"

[ingest]
port = 4242

[[ingest.ae]]
ae_title = "CT-AI"
pipeline = "lung"

[[export.destinations]]
name = "pacs"
ae_title = "PACS"
host = "10.0.0.9"
port = 104

[http]
ingest_port = 0

[broker]
url = "amqp://user:pass@rabbit:5672/"
exchange = "hospital"

[storage]
backend = "s3"
endpoint = "minio:9000"
bucket = "images"
access_key = "key"
secret_key = "secret"
"""


@pytest.fixture(autouse=True)
def no_gateway_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the variables it reads; none of the caller's leak in."""
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)


def configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str | None, env: dict[str, str]
) -> ClientSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = None
    if toml is not None:
        path = tmp_path / "gateway.toml"
        path.write_text(toml)
    return ClientSettings.from_config(path)


def value(settings: ClientSettings, dotted: str) -> Any:
    found: Any = settings
    for part in dotted.split("."):
        found = getattr(found, part)
    return found


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        pytest.param(
            None,
            {},
            {
                "broker.url": "",
                "broker.event_log": Path("gateway-data/events.sqlite3"),
                "storage.backend": "file",
                "storage.path": Path("gateway-data/objects"),
            },
            id="defaults-are-the-gateways",
        ),
        pytest.param(
            FULL,
            {},
            {
                "broker.url": "amqp://user:pass@rabbit:5672/",
                "broker.exchange": "hospital",
                "storage.backend": "s3",
                "storage.endpoint": "minio:9000",
                "storage.bucket": "images",
                "storage.secret_key": "secret",
            },
            id="the-gateways-own-file-other-sections-ignored",
        ),
        pytest.param(
            FULL,
            {"GATEWAY_BROKER__EXCHANGE": "other", "GATEWAY_STORAGE__SECURE": "true"},
            {"broker.exchange": "other", "storage.secure": True, "storage.bucket": "images"},
            id="variables-win-over-the-file",
        ),
        pytest.param(
            None,
            {"GATEWAY_BROKER__URL": "amqp://rabbit/", "GATEWAY_STORAGE__REGION": "eu-1"},
            {"broker.url": "amqp://rabbit/", "storage.region": "eu-1"},
            id="variables-without-a-file",
        ),
        pytest.param(
            '[ingest]\nport = "not a port"\n\n[unknown]\nwhatever = 1\n\n[storage]\nbucket = "b"\n',
            {"GATEWAY_INGEST__PORT": "nor this", "GATEWAY_LOG_LEVEL": "LOUD"},
            {"storage.bucket": "b"},
            id="sections-it-does-not-read-are-not-checked",
        ),
        pytest.param(
            "[broker]\nevent_log = 'events.db'\nevent_log_retention_days = 7\n",
            {},
            {"broker.event_log": Path("events.db"), "broker.event_log_retention_days": 7},
            id="every-field-of-the-gateways-broker-section",
        ),
    ],
)
def test_settings_are_read(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    toml: str | None,
    env: dict[str, str],
    expected: dict[str, Any],
) -> None:
    settings = configured(tmp_path, monkeypatch, toml, env)
    assert {field: value(settings, field) for field in expected} == expected


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        pytest.param(
            "[broker]\nurll = 'amqp://rabbit/'\n",
            {},
            "broker.urll: Extra inputs are not permitted",
            id="typo-in-broker",
        ),
        pytest.param(
            "[storage]\nbucekt = 'b'\n",
            {},
            "storage.bucekt: Extra inputs are not permitted",
            id="typo-in-storage",
        ),
        pytest.param(
            None,
            {"GATEWAY_STORAGE__BUKET": "b"},
            "storage.buket: Extra inputs are not permitted",
            id="typo-in-a-variable",
        ),
        pytest.param(
            "[storage]\nbackend = 'ftp'\n",
            {},
            "storage.backend: Input should be 's3' or 'file'",
            id="value-not-allowed",
        ),
        pytest.param(
            "[broker]\nevent_log_retention_days = 0\n",
            {},
            "broker.event_log_retention_days: Input should be greater than 0",
            id="value-out-of-range",
        ),
        pytest.param(
            None,
            {"GATEWAY_STORAGE__SECURE": "maybe"},
            "storage.secure: Input should be a valid boolean",
            id="bad-value-in-a-variable",
        ),
        pytest.param(
            "[storage\nbucket = 'b'\n", {}, "invalid configuration file", id="toml-syntax"
        ),
    ],
)
def test_invalid_settings_are_config_errors_naming_the_field(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    toml: str | None,
    env: dict[str, str],
    message: str,
) -> None:
    with pytest.raises(ConfigError, match=message):
        configured(tmp_path, monkeypatch, toml, env)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(gateway_client.ConfigError, match="does not exist"):
        PipelineClient.from_config(tmp_path / "absent.toml", name="tests")


def test_gateway_config_names_the_file_when_none_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named, given = tmp_path / "named.toml", tmp_path / "given.toml"
    named.write_text("[storage]\nbucket = 'named'\n")
    given.write_text("[storage]\nbucket = 'given'\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(named))
    assert ClientSettings.from_config(None).storage.bucket == "named"
    assert ClientSettings.from_config(given).storage.bucket == "given"
    assert PipelineClient.from_config(None, name="tests").settings.storage.bucket == "named"


def test_the_repository_example_means_the_same_to_the_client_and_the_gateway() -> None:
    config = REPOSITORY_ROOT / "gateway.toml"
    settings, gateway = ClientSettings.from_config(config), load_settings(config)
    assert (settings.broker, settings.storage) == (gateway.broker, gateway.storage)


def test_the_harness_converts_a_gateways_settings_without_reading_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = GatewaySettings.model_validate(
        {"broker": {"url": "amqp://rabbit/"}, "storage": {"bucket": "test-bucket"}}
    )
    monkeypatch.setenv("GATEWAY_STORAGE__BUCKET", "from-the-environment")
    settings = ClientSettings.from_gateway(gateway)
    assert isinstance(settings, ClientSettings)
    assert (settings.broker, settings.storage) == (gateway.broker, gateway.storage)
