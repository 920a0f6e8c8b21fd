"""The gateway harness writes the TOML it is given and runs the real service as a process, on
ports the system chooses and the process reports."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway_client.testing import (
    GatewayProcess,
    GatewayProcessError,
    GatewayServices,
    Service,
    gateway_config,
    to_toml,
)
from tests.support import dcmtk
from tests.support.ingest import GatewayFactory
from tests.support.services import S3Service


def test_toml_round_trip() -> None:
    config: dict[str, Any] = {
        "title": 'quotes " and \\ backslash, tab\t, DEL \x7f, emoji \U0001f600',
        "ingest": {
            "host": "127.0.0.1",
            "port": 11112,
            "storage_watermark_percent": 75.5,
            "reject_unknown_sources": True,
            "spool_dir": Path("spool/dir"),
            "ae": [
                {"ae_title": "GATEWAY", "pipeline": "default", "allowed_sources": ["ct1", "mr"]},
                {"ae_title": "RESEARCH", "pipeline": "research", "allowed_sources": []},
            ],
            "unset": None,
        },
        "sources": [
            {"name": "ct1", "ae_title": "CT1", "host": "10.0.0.5"},
            {"name": "mr", "ae_title": "MR 1"},
        ],
        "storage": {"bucket": "b", "nested": {"deeper": {"x": -1}}},
        "dotted.key": {"a b": 1},
    }
    parsed = tomllib.loads(to_toml(config))
    assert parsed["title"] == config["title"]
    assert parsed["ingest"]["spool_dir"] == "spool/dir"
    assert "unset" not in parsed["ingest"]
    assert parsed["ingest"]["ae"][1] == config["ingest"]["ae"][1]
    assert parsed["sources"] == config["sources"]
    assert parsed["storage"] == config["storage"]
    assert parsed["dotted.key"] == {"a b": 1}
    assert parsed["ingest"]["storage_watermark_percent"] == 75.5


def test_toml_refuses_what_it_cannot_write() -> None:
    with pytest.raises(TypeError, match="cannot write"):
        to_toml({"x": object()})


def test_a_gateway_that_exits_fails_the_start_with_its_log(tmp_path: Path) -> None:
    config = {"ingest": {"max_associations": -1}}
    process = GatewayProcess(config, tmp_path, startup_timeout=30)
    with pytest.raises(GatewayProcessError, match="exited with") as failure:
        process.start()
    assert str(process.log_path) in str(failure.value)
    assert process.returncode not in (None, 0)
    written = tomllib.loads(process.config_path.read_text())
    assert written == process.prepared_config
    # The test's own values, and the listeners on ports the system chooses.
    assert written["ingest"] == {"max_associations": -1, "port": 0}
    assert written["http"] == {"host": "127.0.0.1", "ingest_port": "auto", "export_port": 0}


def test_gateway_starts_answers_and_stops(
    gateway_factory: GatewayFactory,
    amqp_url: str,
    s3_service: S3Service,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    s3_service.client().make_bucket(bucket_name)
    config = gateway_config(tmp_path, GatewayServices(amqp_url, s3_service), bucket=bucket_name)
    gateway = gateway_factory(config)
    assert gateway.is_running()
    port = gateway.port
    assert gateway.terminate(timeout=30) == 0, gateway.log_tail()
    gateway.start()  # again, same configuration and directory: the same DICOM port
    assert gateway.is_running()
    assert gateway.port == port
    assert dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY").ok
    assert gateway.kill() != 0


@pytest.mark.parametrize(
    ("service", "workers", "http_port", "listeners"),
    [
        pytest.param("ingest", 1, "auto", {"dicom", "http"}, id="ingest"),
        pytest.param("ingest", 2, "auto", {"dicom", "http"}, id="ingest-two-workers"),
        pytest.param("ingest", 1, 0, {"dicom"}, id="ingest-without-http"),
        pytest.param("serve", 1, "auto", {"dicom", "http"}, id="serve"),
        pytest.param("export", 1, "auto", {"http"}, id="export"),
    ],
)
def test_a_gateway_on_ports_the_system_chooses_reports_ports_that_answer(
    tmp_path: Path, service: Service, workers: int, http_port: int | str, listeners: set[str]
) -> None:
    config = gateway_config(tmp_path, None, bucket="reported-ports")
    config["ingest"].update(port=0, workers=workers)
    config["http"].update(ingest_port=http_port, export_port=http_port)
    with GatewayProcess(config, tmp_path / service, service=service) as gateway:
        reported = json.loads(gateway.port_file.read_text())
        assert set(reported) == listeners
        assert all(port > 0 for port in reported.values())
        log = gateway.log_text()
        if "http" in reported:
            assert gateway.http_get("/readyz")[0] == 200
            assert f"health and metrics on http://127.0.0.1:{reported['http']} " in log
        if "dicom" in reported:
            assert dcmtk.echoscu("127.0.0.1", reported["dicom"], "GATEWAY").ok
            assert f"ingest listening on 127.0.0.1:{reported['dicom']} " in log
        assert gateway.terminate() == 0
