"""Association admission decisions, as a table."""

from __future__ import annotations

import pytest

from gateway.settings import AESettings, IngestSettings, SourceSettings
from ingest.policy import (
    Admit,
    AssociationRequest,
    Decision,
    SpoolUsage,
    decide,
    peer_address,
    spool_has_room,
)
from ingest.reject_reasons import (
    CALLED_AE_NOT_RECOGNISED,
    CALLING_AE_NOT_RECOGNISED,
    SPOOL_FULL,
    TOO_MANY_ASSOCIATIONS,
)

GIB = 1024**3
ROOMY = SpoolUsage(used_bytes=20 * GIB, free_bytes=80 * GIB)
SOURCES = (
    SourceSettings(name="ct", ae_title="CT01", host="10.0.0.5"),
    SourceSettings(name="mr", ae_title="MR01"),
)
SETTINGS = IngestSettings(
    max_associations=2,
    ae=(
        AESettings(ae_title="GATEWAY", pipeline="default"),
        AESettings(ae_title="CT-ONLY", pipeline="ct", allowed_sources=("ct",)),
    ),
)
STRICT = SETTINGS.model_copy(update={"reject_unknown_sources": True})


def request(
    called: str = "GATEWAY", calling: str = "ANY", host: str = "127.0.0.1"
) -> AssociationRequest:
    return AssociationRequest(called_ae_title=called, calling_ae_title=calling, remote_host=host)


@pytest.mark.parametrize(
    ("settings", "req", "active", "spool", "expected"),
    [
        pytest.param(SETTINGS, request(), 0, ROOMY, "default", id="admitted"),
        pytest.param(
            SETTINGS,
            request(called="OTHER"),
            0,
            ROOMY,
            CALLED_AE_NOT_RECOGNISED,
            id="unknown-called",
        ),
        pytest.param(
            SETTINGS,
            request(called="gateway"),
            0,
            ROOMY,
            CALLED_AE_NOT_RECOGNISED,
            id="called-is-case-sensitive",
        ),
        pytest.param(SETTINGS, request(), 2, ROOMY, TOO_MANY_ASSOCIATIONS, id="at-limit"),
        pytest.param(SETTINGS, request(), 1, ROOMY, "default", id="below-limit"),
        pytest.param(
            SETTINGS,
            request(),
            0,
            SpoolUsage(80 * GIB, 20 * GIB),
            SPOOL_FULL,
            id="above-watermark",
        ),
        pytest.param(
            SETTINGS, request(), 0, SpoolUsage(4 * GIB, 4 * GIB), SPOOL_FULL, id="below-reserve"
        ),
        pytest.param(
            SETTINGS,
            request(called="CT-ONLY", calling="CT01", host="10.0.0.5"),
            0,
            ROOMY,
            "ct",
            id="allowed-source",
        ),
        pytest.param(
            SETTINGS,
            request(called="CT-ONLY", calling="CT01", host="10.0.0.6"),
            0,
            ROOMY,
            CALLING_AE_NOT_RECOGNISED,
            id="allowed-source-wrong-host",
        ),
        pytest.param(
            SETTINGS,
            request(called="CT-ONLY", calling="MR01"),
            0,
            ROOMY,
            CALLING_AE_NOT_RECOGNISED,
            id="source-not-allowed-for-ae",
        ),
        pytest.param(
            STRICT,
            request(calling="MR01", host="192.0.2.1"),
            0,
            ROOMY,
            "default",
            id="strict-known-source-any-host",
        ),
        pytest.param(
            STRICT,
            request(calling="UNKNOWN"),
            0,
            ROOMY,
            CALLING_AE_NOT_RECOGNISED,
            id="strict-unknown-source",
        ),
        pytest.param(
            STRICT,
            request(calling="UNKNOWN"),
            5,
            SpoolUsage(1, 0),
            CALLING_AE_NOT_RECOGNISED,
            id="permanent-before-transient",
        ),
    ],
)
def test_decide(
    settings: IngestSettings,
    req: AssociationRequest,
    active: int,
    spool: SpoolUsage,
    expected: object,
) -> None:
    decision: Decision = decide(req, settings, SOURCES, active, spool)
    if isinstance(expected, str):
        assert isinstance(decision, Admit)
        assert decision.ae.pipeline == expected
    else:
        assert decision == expected


@pytest.mark.parametrize(
    ("used_gib", "free_gib", "watermark", "reserve", "expected"),
    [
        (75, 25, 75, 5, True),
        (76, 24, 75, 5, False),
        (50, 50, 75, 60, False),
        (0, 100, 75, 0, True),
        (0, 0, 75, 0, False),
        # df's view: 24 GiB used, 78 GiB free is 23.5% used, whatever root keeps in reserve
        (24, 78, 75, 5, True),
    ],
)
def test_spool_has_room(
    used_gib: int, free_gib: int, watermark: float, reserve: float, expected: bool
) -> None:
    usage = SpoolUsage(used_bytes=used_gib * GIB, free_bytes=free_gib * GIB)
    assert spool_has_room(usage, watermark, reserve) is expected


@pytest.mark.parametrize(
    ("reported", "named"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:10.0.0.5", "10.0.0.5"),  # an IPv4 sender on a listener bound to "::"
        ("::1", "::1"),
        ("2001:db8::7", "2001:db8::7"),
        ("::ffff:0:10.0.0.5", "::ffff:0:10.0.0.5"),  # IPv4-translated, not IPv4-mapped
        ("not-an-address", "not-an-address"),
    ],
)
def test_peer_address(reported: str, named: str) -> None:
    assert peer_address(reported) == named


def test_an_ipv4_source_matches_on_a_dual_stack_listener() -> None:
    strict_ct = request(called="CT-ONLY", calling="CT01", host=peer_address("::ffff:10.0.0.5"))
    assert isinstance(decide(strict_ct, STRICT, SOURCES, 0, ROOMY), Admit)
