"""Configuration: TOML file, environment overrides, and errors that name the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.errors import ConfigError
from gateway.settings import DestinationSettings, ExportSettings, IngestSettings, load_settings

EXAMPLE = """
[ingest]
port = 4242
max_associations = 3

[[ingest.ae]]
ae_title = "CT-AI"
pipeline = "lung"
allowed_sources = ["ct"]

[[ingest.ae]]
ae_title = "MR-AI"
pipeline = "brain"

[[sources]]
name = "ct"
ae_title = "CT01"
host = "10.0.0.5"

[storage]
bucket = "images"

[broker]
exchange = "dicom-gateway"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_INGEST__PORT", raising=False)
    settings = load_settings(None)
    assert settings.ingest.port == 11112
    assert settings.ingest.max_associations == 25
    assert settings.ingest.workers == 1
    assert [ae.ae_title for ae in settings.ingest.ae] == ["GATEWAY"]
    assert settings.broker.exchange == "dicom-gateway"


def test_file_is_read(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, EXAMPLE))
    assert settings.ingest.port == 4242
    assert [(ae.ae_title, ae.pipeline) for ae in settings.ingest.ae] == [
        ("CT-AI", "lung"),
        ("MR-AI", "brain"),
    ]
    assert settings.ingest.ae[0].allowed_sources == ("ct",)
    assert settings.sources[0].host == "10.0.0.5"
    assert settings.storage.bucket == "images"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_BROKER__URL", "amqp://u:p@broker:5672/")
    monkeypatch.setenv("GATEWAY_INGEST__PORT", "5555")
    settings = load_settings(write(tmp_path, EXAMPLE))
    assert settings.broker.url == "amqp://u:p@broker:5672/"
    assert settings.ingest.port == 5555
    assert settings.ingest.max_associations == 3  # untouched fields keep the file's value


@pytest.mark.parametrize(
    ("text", "ports"),
    [
        ("[ingest]\nport = 0\n", (0, 8080, 8081)),
        ("[http]\ningest_port = 'auto'\nexport_port = 'auto'\n", (11112, "auto", "auto")),
        ("[http]\ningest_port = 0\nexport_port = 9000\n", (11112, 0, 9000)),
    ],
)
def test_ports_chosen_by_the_system_or_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, ports: tuple[object, ...]
) -> None:
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    settings = load_settings(write(tmp_path, text))
    assert (settings.ingest.port, settings.http.ingest_port, settings.http.export_port) == ports


def test_an_http_port_from_the_environment_is_a_number_or_auto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_HTTP__INGEST_PORT", "auto")
    monkeypatch.setenv("GATEWAY_HTTP__EXPORT_PORT", "9100")
    settings = load_settings(None)
    assert (settings.http.ingest_port, settings.http.export_port) == ("auto", 9100)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[ingest]\nmax_associations = 0\n", "ingest.max_associations"),
        ("[ingest]\nport = -1\n", "ingest.port"),
        ("[ingest]\nport = 'auto'\n", "ingest.port"),
        ("[http]\ningest_port = 65536\n", "http.ingest_port"),
        ("[http]\nexport_port = 'any'\n", "http.export_port"),
        ("[ingest]\nmax_associations = 1001\n", "ingest.max_associations"),
        ("[ingest]\nworkers = 0\n", "ingest.workers"),
        ("[ingest]\nworkers = 33\n", "ingest.workers"),
        (
            "[ingest.tls]\ncertificate = 'c.pem'\nprivate_key = 'k.pem'\n"
            "require_client_certificate = true\n",
            "ingest.tls",
        ),
        (
            "[[export.destinations]]\nname = 'x'\nae_title = 'X'\nhost = 'h'\nport = 1\n"
            "tls = { certificate = 'c.pem' }\n",
            "export.destinations.0.tls",
        ),
        ("[ingest]\nimplementation_class_uid = 'not.a.uid'\n", "ingest.implementation_class_uid"),
        (
            "[ingest]\nimplementation_version_name = '12345678901234567'\n",
            "ingest.implementation_version_name",
        ),
        ("[[ingest.ae]]\nae_title = 'THIS-TITLE-IS-TOO-LONG'\n", "ingest.ae.0.ae_title"),
        ("[[ingest.ae]]\nae_title = 'A'\npipeline = 'has.dot'\n", "ingest.ae.0.pipeline"),
        ("[storage]\nbackend = 'ftp'\n", "storage.backend"),
        ("[ingest]\nunknown_option = 1\n", "ingest.unknown_option"),
        ("[[ingest.ae]]\nae_title = 'A'\nallowed_sources = ['nobody']\n", "nobody"),
        ("[[ingest.ae]]\nae_title = 'A'\n[[ingest.ae]]\nae_title = 'A'\n", "configured twice"),
    ],
)
def test_invalid_values_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings(write(tmp_path, text))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, "[ingest\nport = 1\n"))


def test_the_example_configuration_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    settings = load_settings(Path(__file__).resolve().parents[2] / "gateway.toml")
    assert settings.storage.backend == "s3"
    assert not settings.broker.embedded


def _destinations(count: int) -> tuple[DestinationSettings, ...]:
    return tuple(
        DestinationSettings(name=f"d{n}", ae_title=f"D{n}", host="127.0.0.1", port=104)
        for n in range(count)
    )


@pytest.mark.parametrize(
    ("total", "per_destination", "destinations", "expected"),
    [
        (2, None, 1, 2),  # one destination: nobody to leave a slot to
        (2, None, 2, 1),  # the default: a slow destination leaves one to the others
        (1, None, 3, 1),  # never none
        (8, None, 3, 7),
        (4, 2, 3, 2),  # as configured
        (4, 4, 1, 4),
    ],
)
def test_associations_per_destination(
    total: int, per_destination: int | None, destinations: int, expected: int
) -> None:
    settings = ExportSettings(
        max_associations=total,
        max_associations_per_destination=per_destination,
        destinations=_destinations(destinations),
    )
    assert settings.associations_per_destination == expected


def test_a_per_destination_limit_above_the_total_is_refused() -> None:
    with pytest.raises(ValidationError, match="exceeds max_associations"):
        ExportSettings(max_associations=2, max_associations_per_destination=3)


@pytest.mark.parametrize(
    "name", ["max_associations_per_calling_ae", "max_associations_per_address"]
)
def test_a_per_source_limit_above_the_total_is_refused(name: str) -> None:
    IngestSettings(max_associations=5, **{name: 5})
    with pytest.raises(ValidationError, match="exceeds max_associations"):
        IngestSettings(max_associations=5, **{name: 6})
