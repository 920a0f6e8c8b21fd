"""The gateway harness writes the TOML it is given and runs the real service as a process."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway_client.testing import to_toml
from tests.support.gateway import GatewayFactory, GatewayProcess, basic_config
from tests.support.net import free_port
from tests.support.services import S3Service

CLI_AVAILABLE = importlib.util.find_spec("gateway.__main__") is not None


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
    config = {"ingest": {"port": free_port(), "max_associations": -1}}
    process = GatewayProcess(config, tmp_path, startup_timeout=30)
    with pytest.raises(AssertionError, match="exited with") as failure:
        process.start()
    assert str(process.log_path) in str(failure.value)
    assert process.returncode not in (None, 0)
    assert tomllib.loads(process.config_path.read_text()) == config


@pytest.mark.skipif(not CLI_AVAILABLE, reason="the gateway CLI (gateway.__main__) is not there yet")
def test_gateway_starts_answers_and_stops(
    gateway_factory: GatewayFactory,
    amqp_url: str,
    s3_service: S3Service,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    s3_service.client().make_bucket(bucket_name)
    config = basic_config(
        port=free_port(),
        spool_dir=tmp_path / "spool",
        amqp_url=amqp_url,
        s3=s3_service,
        bucket=bucket_name,
    )
    gateway = gateway_factory(config)
    assert gateway.is_running()
    assert gateway.terminate(timeout=30) == 0, gateway.log_tail()
    gateway.start()  # again, same configuration and directory
    assert gateway.is_running()
    assert gateway.kill() != 0
