"""The one line each failure is said in: a RabbitMQ connection, S3, the environment's settings,
a full spool at start-up, and library log records that repeat ours (taken down a level)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiormq
import pytest
import urllib3
from minio.error import S3Error
from pydantic_settings import SettingsError

from gateway.amqp_connect import broker_address, connect_failure
from gateway.log_noise import NOISE, Demote
from gateway.s3store import failure_summary
from gateway.settings import GatewaySettings, IngestSettings
from gateway.settings_loading import unknown_section_variables, unparsable_variable
from gateway_client.settings import ClientSettings
from ingest.app import spool_full_warning
from ingest.policy import SpoolUsage

GIB = 2**30
URL = "amqp://gw:s3cr3t@rabbit:5673/prod"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("amqp://gw:pw@rabbit:5673/x", "rabbit:5673"),
        ("amqp://rabbit", "rabbit:5672"),
        ("amqps://gw:pw@rabbit/", "rabbit:5671"),
        ("amqp://", "localhost:5672"),
    ],
)
def test_a_broker_address_has_its_port_and_no_credentials(url: str, address: str) -> None:
    assert broker_address(url) == address


@pytest.mark.parametrize(
    ("exc", "said"),
    [
        (TimeoutError(), "no AMQP answer from rabbit:5673 within 5 s: is that a RabbitMQ port"),
        (
            aiormq.exceptions.AMQPConnectionError(111, "Connect call failed ('rabbit', 5673)"),
            "cannot connect to RabbitMQ at rabbit:5673: Connection refused",
        ),
        (
            aiormq.exceptions.AMQPConnectionError(-2, "Name or service not known"),
            "cannot connect to RabbitMQ at rabbit:5673: Name or service not known",
        ),
        (ConnectionRefusedError(111, "refused"), "rabbit:5673: Connection refused"),
        (
            aiormq.exceptions.ProbableAuthenticationError("ACCESS_REFUSED - Login was refused"),
            "RabbitMQ at rabbit:5673 refused user 'gw': wrong user or password",
        ),
        (
            aiormq.exceptions.InvalidFrameError(
                "Expected one of ['Connection.OpenOk'], got <Connection.Close object>"
            ),
            "refused to open virtual host 'prod' for user 'gw'",
        ),
        (
            aiormq.exceptions.AMQPConnectionError(
                "Server connection unexpectedly closed. Read 59 bytes but 1345270063 expected"
            ),
            "rabbit:5673 broke off the AMQP handshake (Server connection unexpectedly closed.",
        ),
    ],
    ids=["timeout", "refused", "no such host", "OSError", "user", "virtual host", "not AMQP"],
)
def test_a_failed_rabbitmq_connection_is_one_line_that_says_why(
    exc: BaseException, said: str
) -> None:
    line = connect_failure(URL, exc)
    assert said in line
    assert "s3cr3t" not in line
    assert "\n" not in line


def s3_error(code: str) -> S3Error:
    return S3Error(None, code, "message", "/bucket", "request", None, "bucket")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "said"),
    [
        (
            s3_error("SignatureDoesNotMatch"),
            "S3 at s3:9000 refused the credentials of access key 'gw' (SignatureDoesNotMatch): "
            "check storage.access_key and storage.secret_key",
        ),
        (
            s3_error("InvalidAccessKeyId"),
            "S3 at s3:9000 refused the credentials of access key 'gw' (InvalidAccessKeyId): "
            "check storage.access_key and storage.secret_key",
        ),
        (
            s3_error("AccessDenied"),
            "S3 at s3:9000 refused the credentials of access key 'gw' (AccessDenied): check "
            "storage.access_key and storage.secret_key, and what the key may do with the bucket",
        ),
        (
            urllib3.exceptions.MaxRetryError(
                None,  # type: ignore[arg-type]
                "/bucket",
                urllib3.exceptions.NewConnectionError(None, "[Errno 111] Connection refused"),  # type: ignore[arg-type]
            ),
            "S3 at s3:9000 not reachable: None: [Errno 111] Connection refused",
        ),
    ],
    ids=["signature", "access key", "access denied", "unreachable"],
)
def test_s3_failures_name_refused_credentials_and_unreachable_servers(
    exc: Exception, said: str
) -> None:
    assert failure_summary(exc, "s3:9000", "gw") == said


def test_other_s3_failures_keep_the_library_text() -> None:
    error = s3_error("InternalError")
    assert failure_summary(error, "s3:9000", "gw") == str(error)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"GATEWAY_BROKR__URL": "amqp://x"}, ["GATEWAY_BROKR__URL"]),
        ({"gateway_ingets__port": "104"}, ["gateway_ingets__port"]),
        ({"GATEWAY_BROKER__URL": "amqp://x", "GATEWAY_INGEST__TLS__CA": "x"}, []),
        ({"GATEWAY_CONFIG": "x.toml", "GATEWAY_TEST_AMQP_URL": "amqp://"}, []),
        ({"OTHER_BROKR__URL": "x", "GATEWAYBROKR__URL": "x"}, []),
    ],
    ids=["section typo", "any case", "known sections", "no delimiter", "other prefixes"],
)
def test_a_variable_of_an_unknown_section_is_named(
    environ: dict[str, str], named: list[str]
) -> None:
    problems = unknown_section_variables(GatewaySettings, environ)
    assert [problem.split(":")[0] for problem in problems] == [
        f"environment variable {name}" for name in named
    ]
    for problem in problems:
        assert "is not a section of the configuration (broker, export, http, ingest" in problem


def test_the_client_settings_ignore_the_gateways_other_sections_as_in_the_file() -> None:
    assert unknown_section_variables(ClientSettings, {"GATEWAY_INGEST__PORT": "104"}) == []


def test_a_variable_with_bad_json_is_named() -> None:
    try:
        json.loads("[{")
    except json.JSONDecodeError as cause:
        error = SettingsError('error parsing value for field "ingest" from source "Env"')
        error.__cause__ = cause
    line = unparsable_variable(error, {"GATEWAY_INGEST__AE": "[{", "GATEWAY_X": "1"})
    assert line.startswith("environment variable GATEWAY_INGEST__AE is not valid JSON (")


def usage(used_gib: float, free_gib: float) -> SpoolUsage:
    return SpoolUsage(used_bytes=int(used_gib * GIB), free_bytes=int(free_gib * GIB))


@pytest.mark.parametrize(
    ("used", "free", "crossed"),
    [
        (70, 30, []),
        (75, 25, []),  # at the watermark: still room, as admission decides
        (80, 20, ["above ingest.storage_watermark_percent (75%)"]),
        (5, 4, ["below ingest.reserved_storage_gb (5 GiB free)"]),
        (
            96,
            4,
            [
                "above ingest.storage_watermark_percent (75%)",
                "below ingest.reserved_storage_gb (5 GiB free)",
            ],
        ),
    ],
)
def test_a_spool_without_room_at_start_up_is_one_warning_naming_the_settings(
    used: float, free: float, crossed: list[str]
) -> None:
    line = spool_full_warning(usage(used, free), Path("data/spool"), IngestSettings())
    if not crossed:
        assert line is None
        return
    assert line is not None
    assert f"the spool's filesystem (data/spool) is {used / (used + free) * 100:.1f}% used" in line
    assert " and ".join(crossed) in line
    assert "every association is rejected until there is room" in line
    assert ("GATEWAY_INGEST__STORAGE_WATERMARK_PERCENT" in line) == (used / (used + free) > 0.75)
    assert ("GATEWAY_INGEST__RESERVED_STORAGE_GB" in line) == (free < 5)
    assert "\n" not in line


def record(logger: str, level: int, message: str, *args: object) -> logging.LogRecord:
    return logging.getLogger(logger).makeRecord(logger, level, __file__, 1, message, args, None)


@pytest.mark.parametrize(
    ("message", "args", "kept_at"),
    [
        (
            "error when creating transport: %r",
            (OSError(111, "refused"),),
            None,
        ),
        (
            'Unexpected connection close from remote "%s", Connection.Close(reply_code=%r, '
            "reply_text=%r)",
            ("amqp://gw:******@rabbit", 320, "CONNECTION_FORCED"),
            logging.WARNING,
        ),
        ("Consumer callback failed", (), logging.ERROR),
    ],
    ids=["connect attempt (ours says it)", "broker closed (only one to say it)", "other"],
)
def test_aiormqs_records_that_repeat_ours_are_taken_down(
    message: str, args: tuple[object, ...], kept_at: int | None
) -> None:
    made = record("aiormq.connection", logging.ERROR, message, *args)
    kept = Demote(NOISE["aiormq.connection"]).filter(made)
    if kept_at is None:
        assert not kept
    else:
        assert kept
        assert (made.levelno, made.levelname) == (kept_at, logging.getLevelName(kept_at))


def test_a_record_is_never_raised_above_the_level_it_came_with() -> None:
    made = record("x", logging.DEBUG, "quiet already")
    assert Demote({"quiet": logging.WARNING}).filter(made)
    assert made.levelno == logging.DEBUG
