"""The deployment in ``compose/``, checked statically (the image it builds: test_dockerfile).

No Docker engine is needed: these tests read the files and hold them to what the README
documents, to the settings model and to the metrics the code exports.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import PurePosixPath
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import ExportMetrics, IngestMetrics, metric_names
from gateway.settings import GatewaySettings, load_settings
from tests.support.compose_files import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    CONFIG_IN_CONTAINER,
    GATEWAY_TOML,
    REPO,
    VARIABLE,
    healthcheck_command,
    image_is_pinned,
    mapping,
    mount_target,
    mounts,
    published_ports,
    read_yaml,
    readme_ports,
    seconds,
    service_environment,
    strings,
)

SERVICES = {"rabbitmq", "minio", "ingest", "export", "prometheus", "grafana"}
GATEWAY_SERVICES = ("ingest", "export")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return read_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: mapping(spec) for name, spec in mapping(compose["services"]).items()}


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``GATEWAY_*`` variable of the test process leaks into the settings."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def settings(clean_environment: pytest.MonkeyPatch) -> GatewaySettings:
    """compose/gateway.toml as the file alone gives it."""
    return load_settings(GATEWAY_TOML)


# --- the compose file ---------------------------------------------------------------------------


def test_compose_file_has_the_expected_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose  # obsolete in the Compose specification
    assert set(mapping(compose["services"])) == SERVICES


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        healthcheck = mapping(service.get("healthcheck"))
        test = strings(healthcheck["test"])
        assert test[0] in {"CMD", "CMD-SHELL"}, name
        assert len(test) > 1, name
        assert not healthcheck.get("disable", False), name


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        assert isinstance(image, str)
        assert image_is_pinned(image), f"{name}: image {image!r} is not pinned to a version"


def test_minio_comes_from_its_own_registry(services: dict[str, dict[str, Any]]) -> None:
    assert str(services["minio"]["image"]).startswith("quay.io/minio/minio:RELEASE.")


def test_every_compose_variable_has_a_default() -> None:
    """``docker compose up`` works on a host without an .env file."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    names = [m["name"] for m in VARIABLE.finditer(text)]
    assert names
    undefaulted = sorted({m["name"] for m in VARIABLE.finditer(text) if m["default"] is None})
    assert not undefaulted


def test_gateway_services_build_one_image_from_the_repository_dockerfile(
    services: dict[str, dict[str, Any]], pyproject: dict[str, Any]
) -> None:
    images = set()
    for name in GATEWAY_SERVICES:
        build = mapping(services[name]["build"])
        assert (COMPOSE_DIR / build["context"]).resolve() == REPO, name
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        images.add(services[name]["image"])
    assert (REPO / "Dockerfile").is_file()
    assert images == {f"dicom-gateway:{pyproject['project']['version']}"}


@pytest.mark.parametrize("name", GATEWAY_SERVICES)
def test_gateway_command_runs_its_service_with_the_mounted_config(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    service = services[name]
    command = strings(service["command"])
    assert command[0] == name
    assert command[command.index("--config") + 1] == CONFIG_IN_CONTAINER
    assert mount_target(service, "./gateway.toml") == CONFIG_IN_CONTAINER
    assert f"./gateway.toml:{CONFIG_IN_CONTAINER}:ro" in strings(service["volumes"])
    data = [source for source, target in mounts(service) if target == "/data"]
    assert data == [f"{name}-data"]  # a named volume of its own, not a host path


@pytest.mark.parametrize("name", GATEWAY_SERVICES)
def test_gateway_waits_for_healthy_broker_and_storage(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends_on = mapping(services[name]["depends_on"])
    for dependency in ("rabbitmq", "minio"):
        assert mapping(depends_on[dependency])["condition"] == "service_healthy"


def test_published_ports_are_the_documented_ones(services: dict[str, dict[str, Any]]) -> None:
    published = set()
    for name, service in services.items():
        for host, container in published_ports(service):
            assert host == container, f"{name}: {host}:{container} differs from the README"
            published.add((name, host))
    assert published == readme_ports()


def test_mounted_files_exist_and_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(mapping(compose.get("volumes", {})))
    used = set()
    for name, service in services.items():
        for source, target in mounts(service):
            assert PurePosixPath(target).is_absolute(), f"{name}: {target}"
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
            else:
                assert not source.startswith("/"), f"{name}: host path {source} in the compose file"
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared


def test_gateway_toml_is_valid_for_the_settings_model(settings: GatewaySettings) -> None:
    assert settings.storage.backend == "s3"
    assert settings.storage.endpoint == "minio:9000"
    assert settings.broker.url
    assert "@rabbitmq:5672" in settings.broker.url
    assert not settings.broker.embedded
    assert settings.ingest.host == "0.0.0.0"
    assert settings.ingest.port == 11112
    assert {ae.ae_title: ae.pipeline for ae in settings.ingest.ae} == {
        "GATEWAY": "default",
        "CT_AI": "ct-triage",
    }
    assert settings.export.destinations
    assert (settings.http.ingest_port, settings.http.export_port) == (8080, 8081)
    for path in (
        settings.ingest.spool_dir,
        settings.export.state_dir,
        settings.broker.event_log,
    ):
        assert PurePosixPath(path).is_relative_to("/data"), f"{path} is not on the /data volume"
    assert not settings.storage.access_key
    assert not settings.storage.secret_key


@pytest.mark.parametrize("name", GATEWAY_SERVICES)
def test_gateway_toml_with_the_compose_environment(
    services: dict[str, dict[str, Any]], clean_environment: pytest.MonkeyPatch, name: str
) -> None:
    environment = service_environment(services[name])
    assert environment["GATEWAY_LOG_FORMAT"] == "json"
    for variable, value in environment.items():
        clean_environment.setenv(variable, value)
    settings = load_settings(GATEWAY_TOML)
    assert settings.log_format == "json"
    assert settings.storage.access_key == environment["GATEWAY_STORAGE__ACCESS_KEY"]
    assert settings.storage.secret_key == environment["GATEWAY_STORAGE__SECRET_KEY"]
    assert settings.broker.url == environment["GATEWAY_BROKER__URL"]
    assert settings.broker.url.startswith("amqp://")
    assert "@rabbitmq:5672" in settings.broker.url


def test_gateway_credentials_match_rabbitmq_and_minio(
    services: dict[str, dict[str, Any]],
) -> None:
    rabbitmq = service_environment(services["rabbitmq"])
    minio = service_environment(services["minio"])
    for name in GATEWAY_SERVICES:
        environment = service_environment(services[name])
        user, password = rabbitmq["RABBITMQ_DEFAULT_USER"], rabbitmq["RABBITMQ_DEFAULT_PASS"]
        assert environment["GATEWAY_BROKER__URL"].startswith(f"amqp://{user}:{password}@")
        assert environment["GATEWAY_STORAGE__ACCESS_KEY"] == minio["MINIO_ROOT_USER"]
        assert environment["GATEWAY_STORAGE__SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"]


def test_gateway_ports_match_the_configuration(
    services: dict[str, dict[str, Any]], settings: GatewaySettings
) -> None:
    ingest, export = services["ingest"], services["export"]
    ingest_ports = {container for _, container in published_ports(ingest)}
    assert {settings.ingest.port, settings.http.ingest_port} <= ingest_ports
    assert settings.http.export_port in {container for _, container in published_ports(export)}
    assert f":{settings.http.ingest_port}/readyz" in healthcheck_command(ingest)
    assert f":{settings.http.export_port}/readyz" in healthcheck_command(export)


def test_stop_grace_covers_the_shutdown_grace(
    services: dict[str, dict[str, Any]], settings: GatewaySettings
) -> None:
    grace = {
        "ingest": settings.ingest.shutdown_grace_seconds,
        "export": settings.export.shutdown_grace_seconds,
    }
    for name in GATEWAY_SERVICES:
        assert seconds(str(services[name]["stop_grace_period"])) > grace[name], name


# --- Prometheus and Grafana ---------------------------------------------------------------------


def test_prometheus_scrapes_the_configured_http_ports(settings: GatewaySettings) -> None:
    config = read_yaml(COMPOSE_DIR / "prometheus" / "prometheus.yml")
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert f"ingest:{settings.http.ingest_port}" in targets
    assert f"export:{settings.http.export_port}" in targets


def _dashboard() -> dict[str, Any]:
    return mapping(json.loads((COMPOSE_DIR / "grafana/dashboards/dicom-gateway.json").read_text()))


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    return [
        str(target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def test_dashboard_uses_only_exported_metrics() -> None:
    registry = CollectorRegistry()
    IngestMetrics.register(registry)
    ExportMetrics.register(registry)
    exported = metric_names(registry)
    used = {
        name
        for expr in _expressions(_dashboard())
        for name in re.findall(r"\bdicom_gateway_[a-z0-9_]+", expr)
    }
    assert used
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_dashboard_covers_every_exported_family() -> None:
    """A metric added to the code without a panel shows up here."""
    registry = CollectorRegistry()
    IngestMetrics.register(registry)
    ExportMetrics.register(registry)
    families = {family.name for family in registry.collect()}
    text = " ".join(_expressions(_dashboard()))
    assert {family for family in families if family not in text} == set()


def test_grafana_provisioning_matches_the_mounts(services: dict[str, dict[str, Any]]) -> None:
    provisioning = COMPOSE_DIR / "grafana" / "provisioning"
    (datasource,) = read_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    uids = {
        target["datasource"]["uid"]
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
    }
    assert uids == {datasource["uid"]}
    (provider,) = read_yaml(provisioning / "dashboards" / "dicom-gateway.yml")["providers"]
    grafana = services["grafana"]
    assert provider["options"]["path"] == mount_target(grafana, "./grafana/dashboards")
