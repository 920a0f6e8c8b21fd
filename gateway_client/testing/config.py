"""The configuration of a gateway under test: the one builder every harness starts from.

:func:`gateway_config` gives a working configuration with names of the test's own (bucket,
exchange, export queue) on RabbitMQ and S3, or on the embedded defaults in a directory;
tests adjust it (:func:`merged`). :func:`for_process` is what the process runner writes: the
ports the test left open chosen by the system, and the ``GATEWAY_TEST_NETDICOM`` mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from gateway_client.testing.services import GatewayServices

#: The AE title and pipeline of the gateway under test.
AE_TITLE: Final = "GATEWAY"
PIPELINE: Final = "default"

Service = Literal["ingest", "export", "serve"]

#: What the runner fills in when a configuration does not say: every listener on a free port
#: the system chooses (the process reports it), HTTP on the loopback only; the endpoint of the
#: service that does not run here is off.
_LISTENERS: Final[Mapping[Service, Mapping[str, Any]]] = {
    "ingest": {"ingest": {"port": 0}, "http": {"ingest_port": "auto", "export_port": 0}},
    "export": {"http": {"ingest_port": 0, "export_port": "auto"}},
    "serve": {"ingest": {"port": 0}, "http": {"ingest_port": "auto", "export_port": 0}},
}
_LOOPBACK: Final[Mapping[str, Any]] = {"http": {"host": "127.0.0.1"}}


def gateway_config(
    directory: Path,
    services: GatewayServices | None,
    *,
    bucket: str,
    exchange: str | None = None,
) -> dict[str, Any]:
    """A gateway configuration for one test, before the test's own changes.

    One AE title (:data:`AE_TITLE` for pipeline :data:`PIPELINE`, any caller), no export
    destinations, exports not retried (a test wants the verdict, not a back-off); the spool and
    the export state under ``directory``. With ``services`` the gateway uses ``bucket`` and an
    exchange (``dicom-gateway.<bucket>`` unless given) and export queue of its own, so that tests
    can run side by side on shared services; without, the embedded defaults (local event log
    and file storage) under ``directory / "embedded"``. The ports are left to the process
    runner (:func:`for_process`).
    """
    exchange = exchange or f"dicom-gateway.{bucket}"
    config: dict[str, Any] = {
        "ingest": {
            "host": "127.0.0.1",
            "spool_dir": str(directory / "spool"),
            "ae": [{"ae_title": AE_TITLE, "pipeline": PIPELINE}],
            # How full the test machine's disk is must not decide a test (the production
            # defaults, 75% and 5 GiB, refuse associations on a busy developer disk).
            "storage_watermark_percent": 99,
            "reserved_storage_gb": 1,
        },
        "export": {
            "state_dir": str(directory / "export"),
            "queue": f"{exchange}.export",
            "retries": 0,
            "destinations": [],
        },
        "http": {"host": "127.0.0.1"},
    }
    if services is None:
        embedded = directory / "embedded"
        config["storage"] = {"backend": "file", "path": str(embedded / "objects"), "bucket": bucket}
        config["broker"] = {"url": "", "event_log": str(embedded / "events.sqlite3")}
    else:
        config["storage"] = {
            "backend": "s3",
            "endpoint": services.s3.endpoint,
            "bucket": bucket,
            "access_key": services.s3.access_key,
            "secret_key": services.s3.secret_key,
            "secure": services.s3.secure,
        }
        config["broker"] = {"url": services.amqp_url, "exchange": exchange}
    return config


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: tables are merged key by key, anything else
    (values, lists) replaced."""
    result = dict(base)
    for key, value in overrides.items():
        current = result.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            result[key] = merged(current, value)
        else:
            result[key] = value
    return result


def for_process(
    config: Mapping[str, Any], service: Service, netdicom: str | None
) -> dict[str, Any]:
    """``config`` as the runner writes it for ``service``.

    Whatever listener the configuration leaves unset gets a port the system chooses (``0`` /
    ``"auto"``; the process reports it), so that no test depends on a fixed port; with
    ``netdicom`` (``GATEWAY_TEST_NETDICOM``) every gateway runs in that pynetdicom mode unless
    the test chose one itself.
    """
    result = merged(merged(_LOOPBACK, _LISTENERS[service]), config)
    return with_netdicom(result, netdicom)


def with_netdicom(config: Mapping[str, Any], netdicom: str | None) -> dict[str, Any]:
    """``config`` with the top-level ``netdicom`` setting, when one is given and the
    configuration has none. (Applied only when asked: a gateway without that setting would
    reject the key.)"""
    result = dict(config)
    if netdicom is not None:
        result.setdefault("netdicom", netdicom)
    return result
