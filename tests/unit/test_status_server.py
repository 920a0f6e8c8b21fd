"""Readiness: a process is ready once every service has started and every check passes."""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from gateway import status_server
from gateway.errors import StorageUnavailable
from gateway.metrics import ExportMetrics, IngestMetrics, metric_names
from gateway.status_server import Checks, StatusServer, start_status_server
from tests.support.net import wait_until


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
    checks.add("storage", lambda: "bucket secret-images: connection refused by 10.0.0.7")
    checks.add("event-bus", lambda: None)
    server = StatusServer("127.0.0.1", 0, registry, checks)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}/healthz") as response:  # noqa: S310
            assert json.loads(response.read()) == {"status": "alive"}
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/readyz")  # noqa: S310
        assert not_ready.value.code == 503
        # Names and states only: what is wrong may name a bucket or a host (it is logged).
        assert json.loads(not_ready.value.read()) == {
            "status": "not ready",
            "checks": {"spool": "failing", "storage": "failing", "event-bus": "ok"},
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


def test_problems_are_logged_once_each_time_they_change(caplog: pytest.LogCaptureFixture) -> None:
    problem: list[str | None] = ["bucket images: connection refused"]
    checks = Checks("ingest")
    checks.add("storage", lambda: problem[0])
    with caplog.at_level(logging.INFO, logger="gateway.status_server"):
        for _ in range(3):
            checks.run()
        problem[0] = None
        checks.run()
        checks.started("ingest")
        checks.run()
    assert [r.getMessage() for r in caplog.records] == [
        "readiness check storage failing: bucket images: connection refused",
        "readiness check storage ok",
    ]


def test_idle_connections_cannot_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_server, "REQUEST_TIMEOUT_SECONDS", 1.0)
    server = StatusServer("127.0.0.1", 0, CollectorRegistry(), Checks())
    server.start()
    before = threading.active_count()
    idle = []
    try:
        for _ in range(3 * status_server.MAX_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x")  # never finished
            idle.append(sock)
        # Those beyond the cap are closed at once, without a thread of their own.
        beyond = 2 * status_server.MAX_CONNECTIONS
        wait_until(lambda: sum(map(_closed, idle)) >= beyond, 10, "connections over the cap closed")
        assert threading.active_count() - before <= status_server.MAX_CONNECTIONS
        # The idle ones are dropped after the request timeout; the endpoint answers again.
        wait_until(lambda: _answers(server.port), 10, "/healthz answering again")
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
