"""Receive limits: the pure decisions as tables, and the guard that applies them to an arriving
data set's file (ingest/receive_limits.py, ingest/receive_guard.py)."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.dicom_status import Status
from gateway.errors import LimitCrossed
from gateway.metrics import IngestMetrics
from gateway.settings import AESettings, IngestSettings
from ingest.associations import ActiveAssociation
from ingest.incoming import IncomingFile, IncomingFiles
from ingest.policy import SpoolUsage
from ingest.receive_guard import AssociationGuard
from ingest.receive_limits import (
    SPOOL_CHECK_BYTES,
    Crossed,
    ReceiveLimits,
    ReceiveRate,
    bytes_crossed,
    refused_before_data,
    spool_crossed,
)

GIB = 1024**3
MIB = 1024**2
LIMITS = ReceiveLimits(
    instance_bytes=1000,
    association_bytes=5000,
    association_instances=3,
    watermark_percent=75,
    reserved_gb=1,
    min_bytes_per_second=100,
    rate_window_seconds=6,
)
UNLIMITED = ReceiveLimits(
    instance_bytes=None,
    association_bytes=None,
    association_instances=None,
    watermark_percent=100,
    reserved_gb=0,
    min_bytes_per_second=0,
    rate_window_seconds=60,
)


def test_the_limits_of_the_default_settings_are_generous_and_finite() -> None:
    limits = ReceiveLimits.of(IngestSettings())
    assert limits.instance_bytes == 8 * GIB
    assert limits.association_bytes == 1024 * GIB
    assert limits.association_instances == 1_000_000
    assert (limits.min_bytes_per_second, limits.rate_window_seconds) == (4096, 60)
    assert (limits.watermark_percent, limits.reserved_gb) == (75, 5)


def test_byte_limits_take_units() -> None:
    settings = IngestSettings(max_instance_bytes="2 GiB", min_receive_bytes_per_second="1 KiB")
    assert (settings.max_instance_bytes, settings.min_receive_bytes_per_second) == (2 * GIB, 1024)


@pytest.mark.parametrize(
    ("stored", "limits", "expected"),
    [
        pytest.param(0, LIMITS, None, id="first"),
        pytest.param(2, LIMITS, None, id="the-last-allowed"),
        pytest.param(3, LIMITS, Crossed.ASSOCIATION_INSTANCES, id="one-too-many"),
        pytest.param(10**9, UNLIMITED, None, id="unlimited"),
    ],
)
def test_instances_per_association(stored: int, limits: ReceiveLimits, expected: Crossed) -> None:
    assert refused_before_data(stored, limits) is expected


@pytest.mark.parametrize(
    ("instance", "stored", "limits", "expected"),
    [
        pytest.param(1000, 0, LIMITS, None, id="instance-at-its-limit"),
        pytest.param(1001, 0, LIMITS, Crossed.INSTANCE_BYTES, id="instance-past-its-limit"),
        pytest.param(1000, 4000, LIMITS, None, id="association-at-its-limit"),
        pytest.param(1, 5000, LIMITS, Crossed.ASSOCIATION_BYTES, id="association-past-its-limit"),
        pytest.param(
            1001, 4900, LIMITS, Crossed.INSTANCE_BYTES, id="both-past:-the-instance-is-named"
        ),
        pytest.param(10 * GIB, 10**15, UNLIMITED, None, id="unlimited"),
    ],
)
def test_byte_limits(
    instance: int, stored: int, limits: ReceiveLimits, expected: Crossed | None
) -> None:
    assert bytes_crossed(instance, stored, limits) is expected


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        pytest.param(SpoolUsage(70 * GIB, 30 * GIB), None, id="below-the-watermark"),
        pytest.param(SpoolUsage(75 * GIB, 25 * GIB), None, id="at-the-watermark"),
        pytest.param(SpoolUsage(76 * GIB, 24 * GIB), Crossed.SPOOL_WATERMARK, id="above-it"),
        pytest.param(SpoolUsage(1 * GIB, GIB - 1), Crossed.SPOOL_WATERMARK, id="into-the-reserve"),
    ],
)
def test_the_spool_while_receiving(usage: SpoolUsage, expected: Crossed | None) -> None:
    assert spool_crossed(usage, LIMITS) is expected


def rate_verdicts(arrivals: list[tuple[float, int]], minimum: int = 100) -> list[bool]:
    """Whether each arrival (seconds after the instance began, bytes) was judged too slow,
    over a 6 s window."""
    rate = ReceiveRate(minimum, 6.0, started=1000.0)
    return [rate.too_slow(count, 1000.0 + at) for at, count in arrivals]


@pytest.mark.parametrize(
    ("arrivals", "expected"),
    [
        pytest.param([(t, 100) for t in range(1, 20)], [False] * 19, id="steady-at-the-minimum"),
        pytest.param(
            [(t * 5.0, 500) for t in range(1, 8)],
            [False] * 7,
            id="at-the-minimum-in-pdus-of-5-s",
        ),
        pytest.param(
            [(t * 7.0, 700) for t in range(1, 6)],
            [False] * 5,
            id="pdus-further-apart-than-the-window",
        ),
        pytest.param(
            [(0.5, 10_000)] + [(t, 10) for t in range(1, 14)],
            [False] * 6 + [True] * 8,
            id="a-burst-then-a-trickle:-seen-once-the-burst-left-the-window",
        ),
        pytest.param(
            [(t, 10) for t in range(1, 8)],
            [False] * 5 + [True] * 2,
            id="a-trickle-from-the-start:-judged-once-a-window-has-passed",
        ),
        pytest.param(
            [(1, 50), (59, 50)],
            [False, True],
            id="one-fragment-per-network-timeout",
        ),
    ],
)
def test_the_receive_rate(arrivals: list[tuple[float, int]], expected: list[bool]) -> None:
    assert rate_verdicts(arrivals) == expected


def test_the_last_window_for_the_log() -> None:
    rate = ReceiveRate(100, 6.0, started=0.0)
    for at in range(1, 8):
        rate.too_slow(10, float(at))
    assert rate.last_window(7.0) == (60, 5.0)  # slots 2 to 7, the last one just begun


# --- the guard on a file being written --------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Setup:
    """One association's guard, registered for this thread, over files in ``directory``."""

    def __init__(self, directory: Path, limits: ReceiveLimits) -> None:
        self.files = IncomingFiles(directory)
        self.usage = SpoolUsage(used_bytes=10 * GIB, free_bytes=90 * GIB)
        self.clock = Clock()
        self.aborted = 0
        self.registry = CollectorRegistry()
        self.metrics = IngestMetrics.register(self.registry)
        self.active = ActiveAssociation(
            association_id="a1",
            ae=AESettings(ae_title="GATEWAY"),
            calling_ae_title="CT01",
            remote_host="10.0.0.5",
            remote_port=4000,
            started_at=datetime(2026, 1, 2, tzinfo=UTC),
        )
        guard = AssociationGuard(
            limits,
            self.active,
            spool_usage=lambda: self.usage,
            counters=self.metrics.listener_counters(),
            abort=self.abort,
            clock=self.clock,
        )
        self.files.watch(threading.current_thread(), guard)

    def abort(self) -> None:
        self.aborted += 1

    def crossed(self, limit: Crossed) -> float | None:
        return self.registry.get_sample_value(
            "dicom_gateway_receive_limits_crossed_total", {"limit": limit.value}
        )

    def refusal(self, file: IncomingFile) -> LimitCrossed:
        failure = self.files.take_failure(file.name)
        assert isinstance(failure, LimitCrossed)
        assert failure.status == Status.OUT_OF_RESOURCES
        return failure


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path, LIMITS)


def test_an_instance_past_its_limit_is_emptied_and_written_no_further(
    setup: Setup, tmp_path: Path
) -> None:
    file = setup.files()
    file.write(b"x" * 600)
    file.write(b"x" * 600)  # crosses 1000
    file.write(b"x" * 600)  # the rest of the message, dropped
    file.close()
    assert file.failed
    assert Path(file.name).stat().st_size == 0
    assert "max_instance_bytes (1000)" in setup.refusal(file).reason
    assert setup.crossed(Crossed.INSTANCE_BYTES) == 1
    assert setup.aborted == 0


def test_an_association_counts_what_it_stored(setup: Setup) -> None:
    with setup.active.lock:
        setup.active.instances, setup.active.bytes = 2, 4500
    file = setup.files()
    file.write(b"x" * 400)
    assert not file.failed
    file.write(b"x" * 200)  # 4500 + 600 > 5000
    file.close()
    assert file.failed
    assert setup.refusal(file).reason.startswith("association_bytes")
    with setup.active.lock:
        setup.active.instances = 3
    refused_at_once = setup.files()
    refused_at_once.close()
    assert refused_at_once.failed
    assert setup.refusal(refused_at_once).reason.startswith("association_instances")


def test_the_spool_is_looked_at_every_mib_of_the_association(tmp_path: Path) -> None:
    setup = Setup(tmp_path, dataclasses.replace(UNLIMITED, watermark_percent=75))
    first = setup.files()
    first.write(b"x" * (SPOOL_CHECK_BYTES // 2))
    first.close()
    setup.usage = SpoolUsage(used_bytes=80 * GIB, free_bytes=20 * GIB)  # now above 75 %
    second = setup.files()
    second.write(b"x" * (SPOOL_CHECK_BYTES // 2 - 1))
    assert not second.failed  # less than a MiB since the last look: not looked at
    second.write(b"x")
    second.close()
    assert second.failed
    assert "80.0% used" in setup.refusal(second).reason
    assert setup.crossed(Crossed.SPOOL_WATERMARK) == 1


def test_a_trickle_aborts_the_association(setup: Setup) -> None:
    file = setup.files()
    for _ in range(7):
        setup.clock.now += 1.0
        file.write(b"x" * 10)  # 10 bytes/s against a minimum of 100
    file.close()
    assert setup.aborted == 1
    assert file.failed
    assert setup.crossed(Crossed.RECEIVE_RATE) == 1


def test_files_of_other_threads_are_not_watched(setup: Setup) -> None:
    opened: list[IncomingFile] = []
    other = threading.Thread(target=lambda: opened.append(setup.files()))
    other.start()
    other.join()
    (file,) = opened
    file.write(b"x" * 5000)
    file.close()
    assert not file.failed


def test_a_refused_instance_that_trickles_on_is_still_aborted_once(setup: Setup) -> None:
    file = setup.files()
    file.write(b"x" * 2000)  # past max_instance_bytes: refused, emptied
    for _ in range(12):
        setup.clock.now += 1.0
        file.write(b"x" * 10)  # the rest of it, trickled
    file.close()
    assert setup.refusal(file).reason.startswith("instance_bytes")
    assert setup.aborted == 1
    assert setup.crossed(Crossed.RECEIVE_RATE) == 1
