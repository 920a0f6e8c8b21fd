"""The benchmark's medians over runs, its export ceiling and its speed ratios."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from bench.integrity import Verdict
from bench.report import EXPORT_CEILING, Row, speed_ratio
from bench.stats import export_ceiling, median, merge_runs
from tests.support.proc import machine_busy_seconds

OK = Verdict(expected=3, received=3, missing=0, altered=0, unexpected=0, duplicates=0)
LOST = replace(OK, received=2, missing=1)


def row(who: str = "storescp", seconds: float | None = 1.0, **changes: object) -> Row:
    base = Row("ct", who, who, 1, 3, 3_000_000, seconds=seconds, verdict=OK)
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3.0, 1.0, 2.0], 2.0),
        ([4.0, 1.0, 2.0, 3.0], 2.5),
        ([None, 5.0, None], 5.0),
        ([None], None),
        ([], None),
    ],
)
def test_median_of_the_values_that_are_there(
    values: list[float | None], expected: float | None
) -> None:
    assert median(values) == expected


@pytest.mark.parametrize(
    ("ours", "reference", "expected"),
    [(2.0, 1.0, 0.5), (1.0, 2.0, 2.0), (None, 1.0, None), (1.0, None, None), (0.0, 1.0, None)],
)
def test_speed_ratio_is_the_reference_time_over_ours(
    ours: float | None, reference: float | None, expected: float | None
) -> None:
    assert speed_ratio(ours, reference) == expected


def test_runs_of_a_row_merge_into_their_medians_in_first_seen_order() -> None:
    runs = [
        row("storescp", 1.0, peak_rss=10),
        row("gateway", 3.0, event_seconds=0.3, first_event_seconds=3.3),
        row("storescp", 3.0, peak_rss=30),
        row("gateway", 5.0, event_seconds=0.1, first_event_seconds=5.1),
        row("storescp", 2.0, peak_rss=20),
        row("gateway", 4.0, event_seconds=0.2, first_event_seconds=4.2),
    ]
    reference, gateway = merge_runs(runs)
    assert (reference.who, reference.seconds, reference.peak_rss) == ("storescp", 2.0, 20)
    assert (reference.runs, reference.samples) == (3, (1.0, 3.0, 2.0))
    assert (gateway.seconds, gateway.event_seconds, gateway.first_event_seconds) == (
        4.0,
        0.2,
        4.2,
    )


def test_rows_with_other_associations_or_data_sets_stay_apart() -> None:
    merged = merge_runs([row(), row(associations=4), row(dataset="small"), row()])
    assert [(r.dataset, r.associations, r.runs) for r in merged] == [
        ("ct", 1, 2),
        ("ct", 4, 1),
        ("small", 1, 1),
    ]


def test_one_failed_run_fails_the_merged_row() -> None:
    merged = merge_runs([row(), row(verdict=LOST), row()])[0]
    assert merged.failed
    assert merged.verdict == LOST


def test_a_run_without_a_time_is_not_counted_but_its_note_stays() -> None:
    merged = merge_runs([row(seconds=2.0), row(seconds=None, verdict=None, note="error: x")])[0]
    assert (merged.seconds, merged.runs, merged.note) == (2.0, 1, "error: x")
    assert merged.failed


def test_export_ceiling_is_the_slower_of_sender_and_download() -> None:
    sender = row("storescu", 1.0, runs=3)
    download = row("download-s3", 1.5, runs=3)
    ceiling = export_ceiling(sender, download)
    assert (ceiling.who, ceiling.seconds, ceiling.runs) == (EXPORT_CEILING, 1.5, 3)
    assert "download" in ceiling.label
    assert export_ceiling(replace(sender, seconds=2.0), download).seconds == 2.0
    assert not ceiling.failed


def test_export_ceiling_has_the_machine_busy_time_of_its_slower_row() -> None:
    sender = row("storescu", 1.0, machine_busy_seconds=0.4)
    download = row("download-s3", 1.5, machine_busy_seconds=2.8)
    assert export_ceiling(sender, download).machine_busy_seconds == 2.8
    slower_sender = replace(sender, seconds=2.0)
    assert export_ceiling(slower_sender, download).machine_busy_seconds == 0.4


def test_export_ceiling_fails_with_either_of_its_rows() -> None:
    sender = row("storescu", 1.0)
    assert export_ceiling(replace(sender, verdict=LOST), row("download-s3")).failed
    missing = export_ceiling(sender, row("download-s3", None, note="error: gone"))
    assert missing.seconds is None
    assert missing.failed


def test_the_machine_busy_time_counts_at_least_this_process_cpu() -> None:
    before, own_before = machine_busy_seconds(), time.process_time()
    assert before is not None
    while time.process_time() - own_before < 0.3:
        pass
    after = machine_busy_seconds()
    assert after is not None
    # /proc/stat counts in ticks (10 ms): a tick or two of slack.
    assert after - before >= time.process_time() - own_before - 0.03
