"""TLS contexts for DICOM TLS (PS3.15 B.1), built from the settings at start-up.

TLS 1.2 at least, with Python's default (BCP 195-compatible) cipher choice. A file that cannot
be read or does not hold what it should is a configuration error, named with its field.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from gateway.errors import ConfigError
from gateway.settings import TlsClientSettings, TlsServerSettings


def server_context(settings: TlsServerSettings) -> ssl.SSLContext:
    """For the listener: our certificate; peers' certificates checked as configured."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, settings.certificate, settings.private_key, "ingest.tls")
    if settings.client_ca is not None:
        try:
            context.load_verify_locations(cafile=settings.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"ingest.tls: cannot load client_ca {settings.client_ca}: {exc}"
            ) from exc
        # A certificate that is shown must be valid even when none is required.
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.require_client_certificate else ssl.CERT_OPTIONAL
        )
    return context


def client_context(settings: TlsClientSettings, destination: str) -> ssl.SSLContext:
    """For an association to ``destination``: its certificate verified, ours shown if set."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if settings.ca is None else str(settings.ca)
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"destination {destination}: cannot load tls.ca {settings.ca}: {exc}"
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.certificate is not None and settings.private_key is not None:
        _load_chain(
            context, settings.certificate, settings.private_key, f"destination {destination}: tls"
        )
    return context


def _load_chain(context: ssl.SSLContext, certificate: Path, private_key: Path, where: str) -> None:
    try:
        context.load_cert_chain(certificate, private_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{where}: cannot load certificate {certificate} with private key {private_key}: {exc}"
        ) from exc
