"""What an operator sees: JSON log lines without patient data, readiness, metrics of ingest."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.status_server import MAX_CONNECTIONS, REQUEST_TIMEOUT_SECONDS
from gateway_client.testing import gateway_environment, http_get
from tests.support import dcmtk
from tests.support.factories import ct_series
from tests.support.ingest import EMBEDDED, RABBITMQ_S3, Ingest
from tests.support.net import wait_until
from tests.support.prometheus import metric

#: What once raised ingest to 2,009 threads (issue 17).
HALF_SENT_REQUESTS = 2000


def get(port: int, path: str) -> tuple[int, Any]:
    status, body = http_get("127.0.0.1", port, path)
    return status, (json.loads(body) if path != "/metrics" else body)


@pytest.mark.backends(EMBEDDED)
def test_json_logs_say_what_happened_without_patient_data(ingest: Ingest, inbox: Path) -> None:
    config = ingest.config()
    config.update(log_format="json", log_level="DEBUG")
    gateway = ingest.start(config)
    series = ct_series(inbox, 3, seed=7)  # patient "Test^Patient7", ID PID00007, born 19700101
    with ingest.events() as events:
        dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series], "GATEWAY").check()
        events.wait_for(1)
    dcmtk.echoscu(gateway.host, gateway.port, called_ae="NOT-OURS")
    wait_until(lambda: "association rejected" in gateway.log_text(), 10, "the rejection logged")

    lines = [
        json.loads(line)
        for line in gateway.log_text().splitlines()
        if not line.startswith("--- test harness")
    ]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    (ended,) = [
        line
        for line in lines
        if line.get("event") == "association" and line.get("outcome") == "released"
    ]
    assert ended["association_id"]
    assert (ended["called_ae"], ended["calling_ae"], ended["instances"]) == (
        "GATEWAY",
        "STORESCU",
        3,
    )
    assert ended["bytes"] > 0
    assert ended["duration_seconds"] >= 0
    assert ended["remote"].startswith("127.0.0.1:")
    (rejected,) = [line for line in lines if line.get("outcome") == "rejected"]
    assert rejected["reason"] == "called-ae-not-recognised"
    assert any(line["level"] == "DEBUG" for line in lines)
    for patient_data in ("Patient7", "PID00007", "19700101"):
        assert patient_data not in gateway.log_text()


@pytest.mark.backends(RABBITMQ_S3)
def test_ingest_alone_serves_health_readiness_and_metrics(ingest: Ingest, inbox: Path) -> None:
    gateway = ingest.start()  # with its HTTP endpoints on a port the system chose
    port = gateway.http_port
    assert get(port, "/healthz") == (200, {"status": "alive"})
    status, ready = get(port, "/readyz")
    assert status == 200, ready
    assert set(ready["checks"]) == {
        "ingest-listener",
        "ingest-event-bus",
        "ingest-storage",
        "ingest-spool",
    }
    with ingest.events() as events:
        dcmtk.storescu(gateway.host, gateway.port, [s.path for s in ct_series(inbox, 2)], "GATEWAY")
        events.wait_for(1)
    dcmtk.echoscu(gateway.host, gateway.port, called_ae="GATEWAY", calling_ae="X", extra_args=())
    _, text = get(port, "/metrics")
    assert metric(text, "dicom_gateway_associations_accepted_total", {"called_ae": "GATEWAY"}) >= 2
    assert metric(text, "dicom_gateway_instances_stored_total") == 2
    assert metric(text, "dicom_gateway_event_publish_latency_seconds_count") == 1
    assert get(port, "/nothing")[0] == 404


@pytest.mark.backends(EMBEDDED)
def test_readiness_names_the_failing_check(ingest: Ingest) -> None:
    # Any real disk is above this watermark: the gateway listens, but is never ready.
    gateway = ingest.start(storage_watermark_percent=0.001, until="listening")
    status, ready = get(gateway.http_port, "/readyz")
    assert status == 503
    assert ready["status"] == "not ready"
    assert ready["checks"]["ingest-spool"] == "failing"
    assert ready["checks"]["ingest-listener"] == "ok"
    # What is wrong is in the log, not in the answer to whoever asks.
    assert "readiness check ingest-spool failing:" in gateway.log_text()
    assert "watermark" in gateway.log_text()


def test_events_follow_prints_each_event_as_it_comes(ingest: Ingest, inbox: Path) -> None:
    gateway = ingest.start()
    command = ["events", "--follow", "--config", str(gateway.config_path)]
    with subprocess.Popen(
        [sys.executable, "-m", "dicom_gateway", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=gateway_environment(),
        cwd=gateway.directory,
    ) as follower:
        assert follower.stdout is not None
        assert follower.stderr is not None
        try:
            following = follower.stderr.readline().decode()
            assert "following" in following, following
            files = [s.path for s in ct_series(inbox, 2)]
            dcmtk.storescu(gateway.host, gateway.port, files, "GATEWAY").check()
            line = follower.stdout.readline()
        finally:
            follower.send_signal(signal.SIGINT)
            assert follower.wait(10) == 130
    event = json.loads(line)
    assert event["type"] == "dicomgateway.association.released.v1"
    assert event["data"]["instance_count"] == 2


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no thread count for process {pid}")


@pytest.mark.backends(EMBEDDED)
def test_half_sent_requests_hold_no_threads_and_probes_get_through(
    ingest: Ingest, inbox: Path
) -> None:
    """2,000 connections that begin a GET and never end it once raised ingest from 11 to 2,009
    threads, held for as long as the connections were; now they hold at most the server's
    slots, for its request timeout, and DICOM goes on beside them."""
    gateway = ingest.start()
    assert gateway.pid is not None
    baseline = _threads(gateway.pid)
    peak = baseline
    half_sent = []
    try:
        for _ in range(HALF_SENT_REQUESTS):
            connection = socket.create_connection((gateway.http_host, gateway.http_port))
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\n")  # never ended
            half_sent.append(connection)
            peak = max(peak, _threads(gateway.pid))
        # The slots, and a thread the server may be starting.
        assert peak <= baseline + MAX_CONNECTIONS + 1
        with ingest.events() as events:
            series = ct_series(inbox, 2)
            dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series], "GATEWAY").check()
            events.wait_for(1)
        # Once the held ones time out, a probe is answered (the attack is not renewed here).
        wait_until(
            lambda: _answers(gateway.http_port), REQUEST_TIMEOUT_SECONDS + 10, "a probe answered"
        )
    finally:
        for connection in half_sent:
            connection.close()


def _answers(port: int) -> bool:
    try:
        return get(port, "/healthz")[0] == 200
    except OSError:
        return False
