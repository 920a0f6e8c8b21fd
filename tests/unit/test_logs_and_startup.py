"""Log lines (JSON, and text a peer cannot forge lines in) and the start-up summary of
``serve``."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from dicom_gateway.serve import startup_lines
from gateway.logs import JsonFormatter, TextFormatter, escape_controls, fields
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


@pytest.mark.parametrize(
    ("peer_text", "written"),
    [
        ("EVIL\n2026-12-07 ERROR forged", "EVIL\\n2026-12-07 ERROR forged"),
        ("CR\rLF", "CR\\rLF"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("NUL\x00", "NUL\\x00"),
        ("C1\x85", "C1\\x85"),
        ("MODALITY-1 ü", "MODALITY-1 ü"),  # printable text stays as it is
    ],
)
def test_text_lines_escape_what_a_peer_sends(peer_text: str, written: str) -> None:
    assert escape_controls(peer_text) == written
    line = TextFormatter().format(record("calling AE title %s rejected", peer_text))
    assert line.endswith(f"INFO test calling AE title {written} rejected")
    assert "\n" not in line
    assert "\r" not in line


def _decode_peer_title() -> None:
    raise ValueError("Invalid AE title 'EVIL\nFORGED'")


def _decode_pdu() -> None:
    try:
        _decode_peer_title()
    except ValueError as inner:
        raise RuntimeError("cannot decode\r\nFORGED too") from inner


def test_an_exception_quoting_a_peer_stays_inside_its_traceback() -> None:
    try:
        _decode_pdu()
    except RuntimeError:
        made = logging.getLogger("test").makeRecord(
            "test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    text = TextFormatter().format(made)
    assert not any(line.startswith("FORGED") for line in text.splitlines())
    assert "ValueError: Invalid AE title 'EVIL\\nFORGED'" in text
    assert "RuntimeError: cannot decode\\r\\nFORGED too" in text
    assert text.splitlines()[1] == "Traceback (most recent call last):"


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
