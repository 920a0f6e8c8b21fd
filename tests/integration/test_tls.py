"""DICOM TLS: the listener with dcmtk's TLS tools as peers, and export's TLS to a destination."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from export.commands import echo_destination
from gateway.settings import GatewaySettings
from tests.support import dcmtk
from tests.support.factories import ct_series
from tests.support.ingest import EMBEDDED, Ingest, released
from tests.support.net import free_port, wait_until
from tests.support.settled import wait_until_handed_on


@dataclass(frozen=True)
class Pki:
    """A test CA, and a server and a client certificate it signed (PEM, keys unencrypted)."""

    ca: Path
    server_key: Path
    server_certificate: Path
    client_key: Path
    client_certificate: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed(directory: Path, name: str, common_name: str, ca: Path, ca_key: Path) -> None:
    key, request = directory / f"{name}.key", directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={common_name}"),
        *("-keyout", str(key), "-out", str(request)),
    )
    _openssl(
        *("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key)),
        *("-CAcreateserial", "-days", "1", "-extfile", str(extensions)),
        *("-out", str(directory / f"{name}.pem")),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-subj", "/CN=dicom-gateway test CA", "-keyout", str(ca_key), "-out", str(ca)),
    )
    _signed(directory, "server", "localhost", ca, ca_key)
    _signed(directory, "client", "modality", ca, ca_key)
    return Pki(
        ca,
        directory / "server.key",
        directory / "server.pem",
        directory / "client.key",
        directory / "client.pem",
    )


def _listener_tls(pki: Pki) -> dict[str, object]:
    return {
        "certificate": str(pki.server_certificate),
        "private_key": str(pki.server_key),
        "client_ca": str(pki.ca),
        "require_client_certificate": True,
    }


def _client_args(pki: Pki) -> list[str]:
    return ["+tls", str(pki.client_key), str(pki.client_certificate), "-pw", "+cf", str(pki.ca)]


@pytest.mark.backends(EMBEDDED)
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_the_listener_takes_tls_with_a_client_certificate_and_nothing_else(
    ingest: Ingest, inbox: Path, pki: Pki, workers: int
) -> None:
    config = ingest.config(workers=workers)
    config["ingest"]["tls"] = _listener_tls(pki)
    gateway = ingest.start(config)
    series = ct_series(inbox, 3)
    paths = [s.path for s in series]
    with ingest.events() as events:
        dcmtk.storescu(
            gateway.host, gateway.port, paths, "GATEWAY", extra_args=_client_args(pki)
        ).check()
        (message,) = events.wait_for(1)
        # Without a client certificate, and without TLS at all: no association.
        anonymous = ["+tla", "+cf", str(pki.ca)]
        assert not dcmtk.storescu(
            gateway.host, gateway.port, paths, "GATEWAY", extra_args=anonymous
        ).ok
        assert not dcmtk.storescu(gateway.host, gateway.port, paths, "GATEWAY").ok
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    assert released(message).instance_count == 3
    assert gateway.is_running()


@pytest.mark.backends(EMBEDDED)
def test_a_stalled_handshake_holds_up_nobody(ingest: Ingest, inbox: Path, pki: Pki) -> None:
    config = ingest.config()
    config["ingest"]["tls"] = _listener_tls(pki)
    gateway = ingest.start(config)
    # Peers that connect and never send their ClientHello.
    stalled = [socket.create_connection((gateway.host, gateway.port)) for _ in range(3)]
    try:
        series = ct_series(inbox, 2)
        started = time.monotonic()
        paths = [s.path for s in series]
        dcmtk.storescu(
            gateway.host, gateway.port, paths, "GATEWAY", extra_args=_client_args(pki)
        ).check()
        assert time.monotonic() - started < 10
    finally:
        for sock in stalled:
            sock.close()


def test_export_reaches_a_tls_destination(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    storescp = subprocess.Popen(
        [
            str(dcmtk.DCMTK_BIN / "storescp"),
            *("+tls", str(pki.server_key), str(pki.server_certificate), "-pw"),
            *("+cf", str(pki.ca), "-aet", "TLSSCP", "-od", str(tmp_path), str(port)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dcmtk.dcmtk_environment(),
    )
    try:
        destination = {"name": "secure", "ae_title": "TLSSCP", "host": "127.0.0.1", "port": port}
        trusting = GatewaySettings.model_validate(
            {
                "export": {
                    "destinations": [
                        {
                            **destination,
                            "tls": {
                                "ca": str(pki.ca),
                                "certificate": str(pki.client_certificate),
                                "private_key": str(pki.client_key),
                            },
                        },
                        {**destination, "name": "plain"},
                        {**destination, "name": "untrusting", "tls": {}},
                    ]
                }
            }
        )
        wait_until(lambda: echo_destination(trusting, "secure") is None, 15, "a C-ECHO over TLS")
        assert echo_destination(trusting, "plain") is not None
        # The system's CAs do not know the test CA: the destination is not trusted.
        assert echo_destination(trusting, "untrusting") is not None
    finally:
        storescp.terminate()
        storescp.wait(10)
