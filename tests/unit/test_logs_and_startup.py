"""JSON log lines and the start-up summary of ``serve``."""

from __future__ import annotations

import json
import logging

from dicom_gateway.serve import startup_lines
from gateway.logs import JsonFormatter, fields
from gateway.settings import GatewaySettings


def record(
    message: str, *args: object, extra: dict[str, object] | None = None
) -> logging.LogRecord:
    logger = logging.getLogger("test")
    made = logger.makeRecord("test", logging.INFO, __file__, 1, message, args, None, extra=extra)
    return made


def test_json_lines_carry_the_message_and_the_structured_fields() -> None:
    line = JsonFormatter().format(
        record("association %s released", "a1", extra=fields(instances=3, outcome="released"))
    )
    document = json.loads(line)
    assert document["message"] == "association a1 released"
    assert (document["instances"], document["outcome"], document["level"]) == (
        3,
        "released",
        "INFO",
    )
    assert "\n" not in line


def test_structured_fields_never_replace_the_standard_ones() -> None:
    document = json.loads(JsonFormatter().format(record("x", extra=fields(message="forged"))))
    assert document["message"] == "x"


def test_zero_configuration_start_up_says_how_to_use_it() -> None:
    lines = startup_lines(GatewaySettings(), 11112, 8080)
    assert "DICOM: AE title GATEWAY on port 11112 -> pipeline default" in lines
    assert any("local event log" in line and "dicom-gateway events" in line for line in lines)
    assert "export destination example: STORESCP at 127.0.0.1:11113" in lines
    assert any(line.startswith("objects: files under gateway-data") for line in lines)


def test_start_up_names_the_ports_listened_on_not_the_configured_ones() -> None:
    settings = GatewaySettings.model_validate(
        {"ingest": {"port": 0}, "http": {"host": "127.0.0.1", "ingest_port": "auto"}}
    )
    lines = startup_lines(settings, 40123, 40124)
    assert "DICOM: AE title GATEWAY on port 40123 -> pipeline default" in lines
    assert "health and metrics: http://127.0.0.1:40124/metrics" in lines
    assert "try it: storescu -aec GATEWAY 127.0.0.1 40123 FILE.dcm" in lines
    assert not any("metrics" in line for line in startup_lines(settings, 40123, None))


def test_zero_configuration_defaults_need_no_services() -> None:
    settings = GatewaySettings()
    assert settings.broker.embedded
    assert settings.storage.backend == "file"
    assert [d.name for d in settings.export.destinations] == ["example"]
