"""Readiness: a process is ready once every service has started and every check passes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import StorageUnavailable
from gateway.metrics import ExportMetrics, IngestMetrics, metric_names
from gateway.status_server import Checks, StatusServer, start_status_server


def test_not_ready_until_every_service_has_started() -> None:
    checks = Checks("ingest", "export")
    checks.add("ingest-spool", lambda: None)
    checks.started("ingest")
    assert checks.run() == {"export-started": "starting", "ingest-spool": None}
    checks.started("export")
    assert checks.run() == {"ingest-spool": None}


def test_a_check_that_raises_a_gateway_error_reports_it() -> None:
    def unreachable() -> str | None:
        raise StorageUnavailable("bucket images: connection refused")

    checks = Checks()
    checks.add("storage", unreachable)
    assert checks.run() == {"storage": "bucket images: connection refused"}


def test_endpoints_answer_over_http() -> None:
    registry = CollectorRegistry()
    metrics = IngestMetrics.register(registry)
    metrics.associations_rejected.labels("temporary-congestion").inc()
    checks = Checks()
    checks.add("spool", lambda: "above the watermark")
    server = StatusServer("127.0.0.1", 0, registry, checks)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}/healthz") as response:  # noqa: S310
            assert json.loads(response.read()) == {"status": "alive"}
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/readyz")  # noqa: S310
        assert not_ready.value.code == 503
        assert json.loads(not_ready.value.read()) == {
            "status": "not ready",
            "checks": {"spool": "above the watermark"},
        }
        with urllib.request.urlopen(f"{base}/metrics") as response:  # noqa: S310
            text = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/plain")
        assert (
            'dicom_gateway_associations_rejected_total{reason="temporary-congestion"} 1.0' in text
        )
    finally:
        server.stop()


def test_metric_names_include_series_not_observed_yet() -> None:
    registry = CollectorRegistry()
    IngestMetrics.register(registry)
    ExportMetrics.register(registry)
    names = metric_names(registry)
    assert "dicom_gateway_export_instances_total" in names
    assert "dicom_gateway_export_association_seconds_bucket" in names
    assert "dicom_gateway_associations_open" in names


def test_a_port_of_0_turns_the_endpoints_off_and_auto_lets_the_system_choose() -> None:
    registry, checks = CollectorRegistry(), Checks()
    assert start_status_server("127.0.0.1", 0, registry, checks) is None
    server = start_status_server("127.0.0.1", "auto", registry, checks)
    assert server is not None
    try:
        assert server.port > 0
        url = f"http://127.0.0.1:{server.port}/healthz"
        with urllib.request.urlopen(url) as response:
            assert response.status == 200
    finally:
        server.stop()
