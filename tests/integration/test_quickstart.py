"""The README's quickstart, end to end, as a newcomer would run it on a fresh machine.

``dicom-gateway serve`` with no configuration file and nothing else running: no RabbitMQ, no
S3. The only settings given (through the environment) are the ports, chosen by the system so
that the test runs next to anything else on the machine (the harness reads them from
``--port-file``), and the spool watermark, so that it does not depend on how full the
machine's disk is; everything else is the built-in defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from contracts import association_released_from_event, parse_event
from contracts.cloudevent import CONTENT_TYPE_STRUCTURED
from gateway_client.testing import GatewayProcess, gateway_environment
from tests.support import dcmtk
from tests.support.factories import ct_series
from tests.support.net import free_port, wait_until
from tests.support.part10_files import read_received
from tests.support.prometheus import metric
from tests.support.storescp import Storescp

#: The console script ``pip install`` put next to this interpreter.
COMMAND = str(Path(sys.executable).with_name("dicom-gateway"))
RELEASED = "dicomgateway.association.released.v1"


@dataclass
class Quickstart:
    gateway: GatewayProcess
    env: dict[str, str]

    @property
    def directory(self) -> Path:
        return self.gateway.directory

    @property
    def dicom_port(self) -> int:
        return self.gateway.port

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [COMMAND, *args],
            cwd=self.directory,
            env={**gateway_environment(), **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def http(self, path: str) -> tuple[int, str]:
        return self.gateway.http_get(path)

    def output(self) -> str:
        return self.gateway.log_text()


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[Quickstart]:
    env = {
        "GATEWAY_INGEST__PORT": "0",
        "GATEWAY_HTTP__INGEST_PORT": "auto",
        # Not what is tested, and not the machine's to decide: the default watermark (75%)
        # would refuse associations on a test machine whose disk happens to be that full.
        "GATEWAY_INGEST__STORAGE_WATERMARK_PERCENT": "99",
        "GATEWAY_INGEST__RESERVED_STORAGE_GB": "1",
        # The default example destination, on a free port instead of 11113.
        "GATEWAY_EXPORT__DESTINATIONS": json.dumps(
            [{"name": "example", "ae_title": "STORESCP", "host": "127.0.0.1", "port": free_port()}]
        ),
    }
    # No configuration file: serve on its defaults and these variables, until /readyz says 200.
    gateway = GatewayProcess(None, tmp_path / "fresh", service="serve", env=env, command=[COMMAND])
    with gateway:
        yield Quickstart(gateway, env)
        assert gateway.terminate(30) == 0, gateway.log_tail()


def test_zero_config_serve_receives_announces_and_exports(
    quickstart: Quickstart, tmp_path: Path
) -> None:
    printed = quickstart.output()
    assert f"AE title GATEWAY on port {quickstart.dicom_port} -> pipeline default" in printed
    assert "export destination example: STORESCP at 127.0.0.1" in printed

    series = ct_series(tmp_path / "in", 20)
    dcmtk.storescu("127.0.0.1", quickstart.dicom_port, [s.path for s in series], "GATEWAY").check()
    rejected = dcmtk.echoscu("127.0.0.1", quickstart.dicom_port, called_ae="NOT-OURS")
    assert rejected.rejection is not None

    def association_events() -> list[dict[str, Any]]:
        listed = quickstart.run("events", "--type", RELEASED)
        assert listed.returncode == 0, listed.stderr
        return [json.loads(line) for line in listed.stdout.splitlines()]

    wait_until(lambda: len(association_events()) == 1, 20, "events shows the association")
    (event,) = association_events()
    released = association_released_from_event(
        parse_event(json.dumps(event).encode(), content_type=CONTENT_TYPE_STRUCTURED, headers={})
    )
    assert released.instance_count == 20
    assert (quickstart.directory / "gateway-data").is_dir()

    pacs_port = json.loads(quickstart.env["GATEWAY_EXPORT__DESTINATIONS"])[0]["port"]
    with Storescp(tmp_path / "pacs", port=pacs_port) as pacs:
        sent = quickstart.run(
            "send", "--to", "example", "--association", released.association_id, "--wait"
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "example: succeeded, sent 20, failed 0" in sent.stdout
        received = {r.sop_instance_uid: r for r in map(read_received, pacs.received_files())}
    assert sorted(received) == sorted(s.uids.sop_instance for s in series)
    for instance in series:
        raw = instance.path.read_bytes()
        assert raw.endswith(received[instance.uids.sop_instance].data_set)

    unknown = quickstart.run("send", "--to", "nowhere", "--association", released.association_id)
    assert unknown.returncode == 2, unknown.stderr  # refused before anything is published
    assert "unknown destination 'nowhere' (known: example)" in unknown.stderr
    missing = f"{released.association_id}/1.2.3/1.2.4/1.2.5.dcm"
    failed = quickstart.run("send", "--to", "example", missing)
    assert failed.returncode == 0, failed.stderr  # published; its completion says it failed

    def metrics() -> str:
        status, body = quickstart.http("/metrics")
        assert status == 200
        return body

    wait_until(
        lambda: metric(metrics(), "dicom_gateway_export_requests_total", {"status": "failed"}) == 1,
        30,
        "the failed export is counted",
    )
    text = metrics()
    assert metric(text, "dicom_gateway_associations_accepted_total", {"called_ae": "GATEWAY"}) == 1
    assert (
        metric(
            text,
            "dicom_gateway_associations_rejected_total",
            {"reason": "called-ae-not-recognised"},
        )
        == 1
    )
    assert (
        metric(
            text,
            "dicom_gateway_associations_ended_total",
            {"called_ae": "GATEWAY", "outcome": "released"},
        )
        == 1
    )
    assert metric(text, "dicom_gateway_instances_received_total", {"called_ae": "GATEWAY"}) == 20
    assert metric(text, "dicom_gateway_events_published_total") == 1
    assert metric(text, "dicom_gateway_export_requests_total", {"status": "succeeded"}) == 1
    assert (
        metric(
            text,
            "dicom_gateway_export_instances_total",
            {"destination": "example", "outcome": "sent"},
        )
        == 20
    )
    assert (
        metric(
            text,
            "dicom_gateway_export_instances_total",
            {"destination": "example", "outcome": "failed"},
        )
        == 1
    )
    assert os.path.exists(quickstart.directory / "gateway-data" / "events.sqlite3")
