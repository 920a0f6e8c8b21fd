"""Peers sending undecodable PDUs by the hundred (issue 17, item 6): pynetdicom logged each one
at ERROR with its traceback, 1,700 lines for one connection. Now each connection writes its
first failure in a few lines without a traceback, and one line with the count of the rest
when it closes; an honest sender beside them is served."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
from pathlib import Path

import pytest

from gateway_client.testing import GatewayProcess
from tests.support import dcmtk
from tests.support.factories import ct_series
from tests.support.hostile_dicom import request
from tests.support.ingest import EMBEDDED, Ingest
from tests.support.net import wait_until

#: PDUs each hostile connection sends.
REPEATS = 100
#: What pynetdicom writes for one failure (what was wrong, that the PDU could not be
#: decoded, the exception), for warnings and errors each (gateway/netdicom/connection_logs.py).
LINES_PER_CONNECTION = 6
_PROTOCOL_LINE = re.compile(r" (WARNING|ERROR) (pynetdicom|gateway\.netdicom)[.\w]* ")
_LEFT_OUT = re.compile(r"connection from 127\.0\.0\.1:(\d+): \d+ more errors and \d+ more warnings")


def hostile_streams(port: int, netdicom: str) -> list[bytes]:
    """What the hostile connections send: undecodable PDUs before an association and, in prompt
    mode, after a good request. (Plain mode's DUL thread dies of garbage after a request, and
    Python prints that traceback, not the log: pynetdicom's fault that prompt mode contains,
    docs/reliability.md, "Hostile input".)"""
    bad_request = struct.pack(">BBI", 0x01, 0, 10) + bytes(10)  # AE titles of NULs, cut short
    unknown = struct.pack(">BBI", 0x09, 0, 4) + bytes(4)
    broken_pdv = struct.pack(">BBI", 0x04, 0, 8) + struct.pack(">IBB", 2, 1, 3) + bytes(2)
    streams = [bad_request * REPEATS, unknown * REPEATS]
    if netdicom == "prompt":
        streams += [request(port) + broken_pdv * REPEATS, request(port) + bad_request * REPEATS]
    return streams


def send_until_closed(gateway: GatewayProcess, data: bytes) -> int:
    """Send ``data``, and wait until the service closes the connection; our port."""
    with socket.create_connection((gateway.host, gateway.port), timeout=30) as sock:
        port = int(sock.getsockname()[1])
        with contextlib.suppress(ConnectionError):  # it may have closed before all was sent
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
    return port


@pytest.mark.backends(EMBEDDED)
@pytest.mark.parametrize("netdicom", ["prompt", "plain"])
def test_undecodable_pdus_write_a_few_lines_per_connection_and_honest_senders_are_served(
    ingest: Ingest, inbox: Path, netdicom: str
) -> None:
    config = ingest.config()
    config["netdicom"] = netdicom
    gateway = ingest.start(config)
    with ingest.events() as events:
        ports = [
            send_until_closed(gateway, data) for data in hostile_streams(gateway.port, netdicom)
        ]
        series = ct_series(inbox, 3)
        dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series], "GATEWAY").check()
        events.wait_for(1)

    def left_out() -> list[int]:
        return [int(port) for port in _LEFT_OUT.findall(gateway.log_text())]

    # One line for each connection, when it closes (the line may follow the close).
    wait_until(lambda: sorted(left_out()) == sorted(ports), 10, "a line for each connection")
    log = gateway.log_text()
    assert "Traceback" not in log
    protocol_lines = [
        line
        for line in log.splitlines()
        if _PROTOCOL_LINE.search(line) and not _LEFT_OUT.search(line)
    ]
    assert len(protocol_lines) <= LINES_PER_CONNECTION * len(ports), "\n".join(protocol_lines)
