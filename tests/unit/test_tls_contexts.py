"""TLS files that cannot be loaded are configuration errors naming the field and the file."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import TlsClientSettings, TlsServerSettings
from gateway.tls import client_context, server_context
from tests.support.pki import self_signed


def test_a_missing_listener_certificate_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=r"ingest\.tls: cannot load certificate .*missing\.pem"):
        server_context(TlsServerSettings(certificate=missing, private_key=missing))


def test_a_file_that_is_no_certificate_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"destination pacs: cannot load tls\.ca"):
        client_context(TlsClientSettings(ca=garbage), "pacs")


def test_a_destination_is_always_verified_by_certificate_and_name() -> None:
    context = client_context(TlsClientSettings(), "pacs")
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_a_client_certificate_that_is_shown_must_be_valid(tmp_path: Path) -> None:
    """With client_ca and no requirement, a certificate is optional but checked if shown."""
    certificate, key = self_signed(tmp_path)
    optional = server_context(
        TlsServerSettings(certificate=certificate, private_key=key, client_ca=certificate)
    )
    required = server_context(
        TlsServerSettings(
            certificate=certificate,
            private_key=key,
            client_ca=certificate,
            require_client_certificate=True,
        )
    )
    assert optional.verify_mode is ssl.CERT_OPTIONAL
    assert required.verify_mode is ssl.CERT_REQUIRED
