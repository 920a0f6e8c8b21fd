"""The deployment in ``compose/`` and the ``Dockerfile``, checked statically.

No Docker engine is needed: these tests read the files and hold them to what the README
documents, to the settings model, to the console script and to the metrics the code exports.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.metrics import ExportMetrics, IngestMetrics, metric_names
from gateway.settings import GatewaySettings, load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
GATEWAY_TOML = COMPOSE_DIR / "gateway.toml"
CONFIG_IN_CONTAINER = "/etc/dicom-gateway/gateway.toml"

SERVICES = {"rabbitmq", "minio", "ingest", "export", "prometheus", "grafana"}
GATEWAY_SERVICES = ("ingest", "export")

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_DURATION = re.compile(r"^(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


# --- reading the files -------------------------------------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    assert isinstance(value, dict), f"expected a mapping, got {value!r}"
    return value


def _strings(value: Any) -> list[str]:
    assert isinstance(value, list), f"expected a list, got {value!r}"
    assert all(isinstance(v, str) for v in value), value
    return value


def _yaml(path: Path) -> dict[str, Any]:
    return _mapping(yaml.safe_load(path.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: _mapping(spec) for name, spec in _mapping(compose["services"]).items()}


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


def _interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` with the defaults, as on a host without an .env file."""

    def default(match: re.Match[str]) -> str:
        assert match["default"] is not None, f"${{{match['name']}}} has no default"
        return match["default"]

    return _VARIABLE.sub(default, value)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = _mapping(service.get("environment", {}))
    return {name: _interpolate(str(value)) for name, value in environment.items()}


def _published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host, container) pairs of the short port syntax ``[ip:]host:container[/proto]``."""
    pairs = []
    for entry in _strings(service.get("ports", [])):
        parts = entry.split("/")[0].split(":")
        assert len(parts) >= 2, f"{entry!r}: give the host port explicitly"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of the short volume syntax ``source:target[:mode]``."""
    mounts = []
    for entry in _strings(service.get("volumes", [])):
        source, target, *_ = entry.split(":")
        mounts.append((source, target))
    return mounts


def _mount_target(service: dict[str, Any], source: str) -> str:
    targets = [t for s, t in _mounts(service) if s == source]
    assert len(targets) == 1, f"{source} is mounted {len(targets)} times"
    return targets[0]


def _healthcheck_command(service: dict[str, Any]) -> str:
    return " ".join(_strings(_mapping(service["healthcheck"])["test"]))


def _seconds(duration: str) -> int:
    match = _DURATION.match(duration)
    assert duration, "empty duration"
    assert match is not None, f"unsupported duration {duration!r}"
    return int(match["m"] or 0) * 60 + int(match["s"] or 0)


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def _dockerfile_args(instruction: str) -> list[str]:
    return [arguments for keyword, arguments in _dockerfile() if keyword == instruction]


def _readme_ports() -> set[tuple[str, int]]:
    """The (service, port) rows of the ports table under "## What runs where"."""
    text = (COMPOSE_DIR / "README.md").read_text(encoding="utf-8")
    section = text.split("## What runs where", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and cells[1].isdigit():
            rows.add((cells[0], int(cells[1])))
    assert rows, "no ports table found in compose/README.md"
    return rows


def _image_is_pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return (
        bool(name)
        and "/" not in tag
        and tag not in {"latest", "stable", "main"}
        and re.search(r"\d", tag) is not None
    )


# --- the compose file ---------------------------------------------------------------------------


def test_compose_file_has_the_expected_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose  # obsolete in the Compose specification
    assert set(_mapping(compose["services"])) == SERVICES


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        healthcheck = _mapping(service.get("healthcheck"))
        test = _strings(healthcheck["test"])
        assert test[0] in {"CMD", "CMD-SHELL"}, name
        assert len(test) > 1, name
        assert not healthcheck.get("disable", False), name


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        assert isinstance(image, str)
        assert _image_is_pinned(image), f"{name}: image {image!r} is not pinned to a version"


def test_dockerfile_base_image_is_pinned() -> None:
    defaults = dict(arg.split("=", 1) for arg in _dockerfile_args("ARG") if "=" in arg)
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: defaults[m[1]], a.split()[0])
        for a in _dockerfile_args("FROM")
    ]
    assert bases
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base


def test_minio_comes_from_its_own_registry(services: dict[str, dict[str, Any]]) -> None:
    assert str(services["minio"]["image"]).startswith("quay.io/minio/minio:RELEASE.")


def test_every_compose_variable_has_a_default() -> None:
    """``docker compose up`` works on a host without an .env file."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    names = [m["name"] for m in _VARIABLE.finditer(text)]
    assert names
    undefaulted = sorted({m["name"] for m in _VARIABLE.finditer(text) if m["default"] is None})
    assert not undefaulted


def test_gateway_services_build_one_image_from_the_repository_dockerfile(
    services: dict[str, dict[str, Any]], pyproject: dict[str, Any]
) -> None:
    images = set()
    for name in GATEWAY_SERVICES:
        build = _mapping(services[name]["build"])
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
    command = _strings(service["command"])
    assert command[0] == name
    assert command[command.index("--config") + 1] == CONFIG_IN_CONTAINER
    assert _mount_target(service, "./gateway.toml") == CONFIG_IN_CONTAINER
    assert f"./gateway.toml:{CONFIG_IN_CONTAINER}:ro" in _strings(service["volumes"])
    data = [source for source, target in _mounts(service) if target == "/data"]
    assert data == [f"{name}-data"]  # a named volume of its own, not a host path


@pytest.mark.parametrize("name", GATEWAY_SERVICES)
def test_gateway_waits_for_healthy_broker_and_storage(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends_on = _mapping(services[name]["depends_on"])
    for dependency in ("rabbitmq", "minio"):
        assert _mapping(depends_on[dependency])["condition"] == "service_healthy"


def test_published_ports_are_the_documented_ones(services: dict[str, dict[str, Any]]) -> None:
    published = set()
    for name, service in services.items():
        for host, container in _published_ports(service):
            assert host == container, f"{name}: {host}:{container} differs from the README"
            published.add((name, host))
    assert published == _readme_ports()


def test_mounted_files_exist_and_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(_mapping(compose.get("volumes", {})))
    used = set()
    for name, service in services.items():
        for source, target in _mounts(service):
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
    environment = _environment(services[name])
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
    rabbitmq = _environment(services["rabbitmq"])
    minio = _environment(services["minio"])
    for name in GATEWAY_SERVICES:
        environment = _environment(services[name])
        user, password = rabbitmq["RABBITMQ_DEFAULT_USER"], rabbitmq["RABBITMQ_DEFAULT_PASS"]
        assert environment["GATEWAY_BROKER__URL"].startswith(f"amqp://{user}:{password}@")
        assert environment["GATEWAY_STORAGE__ACCESS_KEY"] == minio["MINIO_ROOT_USER"]
        assert environment["GATEWAY_STORAGE__SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"]


def test_gateway_ports_match_the_configuration(
    services: dict[str, dict[str, Any]], settings: GatewaySettings
) -> None:
    ingest, export = services["ingest"], services["export"]
    ingest_ports = {container for _, container in _published_ports(ingest)}
    assert {settings.ingest.port, settings.http.ingest_port} <= ingest_ports
    assert settings.http.export_port in {container for _, container in _published_ports(export)}
    assert f":{settings.http.ingest_port}/readyz" in _healthcheck_command(ingest)
    assert f":{settings.http.export_port}/readyz" in _healthcheck_command(export)


def test_stop_grace_covers_the_shutdown_grace(
    services: dict[str, dict[str, Any]], settings: GatewaySettings
) -> None:
    grace = {
        "ingest": settings.ingest.shutdown_grace_seconds,
        "export": settings.export.shutdown_grace_seconds,
    }
    for name in GATEWAY_SERVICES:
        assert _seconds(str(services[name]["stop_grace_period"])) > grace[name], name


# --- the Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_entrypoint_is_the_console_script(pyproject: dict[str, Any]) -> None:
    (entrypoint,) = _dockerfile_args("ENTRYPOINT")
    assert json.loads(entrypoint) == ["dicom-gateway"]
    assert "dicom-gateway" in pyproject["project"]["scripts"]
    assert json.loads(_dockerfile_args("CMD")[-1]) == ["serve"]


def test_dockerfile_runs_unprivileged_on_the_data_volume() -> None:
    users = _dockerfile_args("USER")
    assert users
    assert users[-1] not in {"root", "0"}
    assert _dockerfile_args("WORKDIR")[-1] == "/data"
    assert any("/data" in volume for volume in _dockerfile_args("VOLUME"))
    exposed = {int(port) for ports in _dockerfile_args("EXPOSE") for port in ports.split()}
    assert exposed == {11112, 8080, 8081}
    (healthcheck,) = _dockerfile_args("HEALTHCHECK")
    assert "python" in healthcheck
    assert "/healthz" in healthcheck


def test_dockerfile_copies_every_package_and_the_context_keeps_them(
    pyproject: dict[str, Any],
) -> None:
    included = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in included}
    copied = {copy.split()[0] for copy in _dockerfile_args("COPY") if not copy.startswith("--")}
    assert packages <= copied
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "gateway-data"} <= ignored
    assert not (packages | {"pyproject.toml", "README.md"}) & ignored


# --- Prometheus and Grafana ---------------------------------------------------------------------


def test_prometheus_scrapes_the_configured_http_ports(settings: GatewaySettings) -> None:
    config = _yaml(COMPOSE_DIR / "prometheus" / "prometheus.yml")
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert f"ingest:{settings.http.ingest_port}" in targets
    assert f"export:{settings.http.export_port}" in targets


def _dashboard() -> dict[str, Any]:
    return _mapping(json.loads((COMPOSE_DIR / "grafana/dashboards/dicom-gateway.json").read_text()))


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
    (datasource,) = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    uids = {
        target["datasource"]["uid"]
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
    }
    assert uids == {datasource["uid"]}
    (provider,) = _yaml(provisioning / "dashboards" / "dicom-gateway.yml")["providers"]
    grafana = services["grafana"]
    assert provider["options"]["path"] == _mount_target(grafana, "./grafana/dashboards")
