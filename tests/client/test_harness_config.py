"""The harness's one configuration builder and the settings it reads from GATEWAY_TEST_*:
no services or processes needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_client.testing import (
    GatewayProcess,
    GatewayServices,
    S3Service,
    Service,
    TestServices,
    for_process,
    gateway_config,
)
from tests.support.seed import draw_seed

SERVICES = GatewayServices("amqp://u:p@broker:5672/", S3Service("s3:9000", "key", "secret"))


@pytest.mark.parametrize(
    ("service", "dicom", "http"),
    [
        ("ingest", {"port": 0}, {"host": "127.0.0.1", "ingest_port": "auto", "export_port": 0}),
        ("serve", {"port": 0}, {"host": "127.0.0.1", "ingest_port": "auto", "export_port": 0}),
        ("export", None, {"host": "127.0.0.1", "ingest_port": 0, "export_port": "auto"}),
    ],
)
def test_every_listener_left_open_gets_a_port_the_system_chooses(
    service: Service, dicom: dict[str, object] | None, http: dict[str, object]
) -> None:
    written = for_process({}, service, None)
    assert written.get("ingest") == dicom
    assert written["http"] == http


def test_a_test_keeps_the_ports_and_host_it_chose() -> None:
    config = {"ingest": {"port": 11112}, "http": {"host": "0.0.0.0", "ingest_port": 0}}
    written = for_process(config, "ingest", None)
    assert written["ingest"] == {"port": 11112}
    assert written["http"] == {"host": "0.0.0.0", "ingest_port": 0, "export_port": 0}


def test_netdicom_goes_into_the_configuration_only_when_it_is_set() -> None:
    assert "netdicom" not in for_process({}, "ingest", None)
    assert for_process({}, "export", "plain")["netdicom"] == "plain"
    assert for_process({"netdicom": "prompt"}, "serve", "plain")["netdicom"] == "prompt"


def test_the_runner_takes_netdicom_from_the_test_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = gateway_config(tmp_path, None, bucket="b")
    monkeypatch.delenv("GATEWAY_TEST_NETDICOM", raising=False)
    assert "netdicom" not in GatewayProcess(config, tmp_path).prepared_config
    monkeypatch.setenv("GATEWAY_TEST_NETDICOM", "plain")
    assert GatewayProcess(config, tmp_path).prepared_config["netdicom"] == "plain"
    given = TestServices(netdicom="prompt")
    assert GatewayProcess(config, tmp_path, services=given).prepared_config["netdicom"] == "prompt"


def test_the_seed_comes_from_the_test_environment_when_it_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_TEST_SEED", "424242")
    assert TestServices().seed == 424242
    assert draw_seed(TestServices()) == 424242
    monkeypatch.delenv("GATEWAY_TEST_SEED")
    assert 0 <= draw_seed(TestServices()) < 1_000_000


def test_a_gateway_configuration_has_names_of_the_test_s_own(tmp_path: Path) -> None:
    shared = gateway_config(tmp_path, SERVICES, bucket="t-one-abc123")
    assert shared["storage"]["bucket"] == "t-one-abc123"
    assert shared["broker"] == {"url": SERVICES.amqp_url, "exchange": "dicom-gateway.t-one-abc123"}
    assert shared["export"]["queue"] == "dicom-gateway.t-one-abc123.export"
    embedded = gateway_config(tmp_path, None, bucket="t-one-abc123")
    assert embedded["storage"]["path"] == str(tmp_path / "embedded" / "objects")
    assert embedded["broker"] == {
        "url": "",
        "event_log": str(tmp_path / "embedded" / "events.sqlite3"),
    }
    assert "port" not in embedded["ingest"]  # left to the runner
