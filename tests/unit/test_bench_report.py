"""The benchmark's tables: medians with their range, and each row's ratios."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.integrity import Verdict
from bench.report import (
    EXPORT_CEILING,
    INGEST_CEILING,
    Row,
    export_table,
    ingest_table,
)

OK = Verdict(expected=100, received=100, missing=0, altered=0, unexpected=0, duplicates=0)


def row(who: str, seconds: float, **changes: object) -> Row:
    base = Row("ct", who, f"label {who}", 1, 100, 50_000_000, seconds=seconds, verdict=OK)
    return replace(base, **changes)  # type: ignore[arg-type]


def cells(table: str, label: str) -> list[str]:
    line = next(line for line in table.splitlines() if f"| {label} |" in line)
    return [cell.strip() for cell in line.strip("|").split("|")]


def column(table: str, name: str) -> int:
    header = table.splitlines()[0]
    return [cell.strip() for cell in header.strip("|").split("|")].index(name)


def test_ingest_ratios_against_storescp_and_against_the_ceiling() -> None:
    rows = [
        row("storescp", 0.5),
        row(INGEST_CEILING, 1.0, first_event_seconds=1.2, event_seconds=0.1),
        row("rabbitmq-s3", 2.0, first_event_seconds=2.4, event_seconds=0.4),
        row("embedded", 1.0, first_event_seconds=1.1, event_seconds=0.1),
    ]
    table = ingest_table(rows)
    answered = column(table, "answered ours/storescp")
    to_ceiling = column(table, "first byte→event ours/ceiling")
    gateway = cells(table, "label rabbitmq-s3")
    assert (gateway[answered], gateway[to_ceiling]) == ("0.25", "0.50")
    assert gateway[column(table, "first byte→event s")] == "2.40"
    assert gateway[column(table, "release→event ms")] == "400"
    assert cells(table, f"label {INGEST_CEILING}")[to_ceiling] == "1.00"
    # The ceiling runs on S3: the embedded rows are not compared with it.
    assert cells(table, "label embedded")[to_ceiling] == ""
    assert cells(table, "label storescp")[to_ceiling] == ""


def test_a_ratio_without_its_reference_row_is_not_available() -> None:
    table = ingest_table([row("rabbitmq-s3", 2.0, first_event_seconds=2.4)])
    gateway = cells(table, "label rabbitmq-s3")
    assert gateway[column(table, "answered ours/storescp")] == "n/a"
    assert gateway[column(table, "first byte→event ours/ceiling")] == "n/a"


def test_several_runs_show_the_median_and_the_range() -> None:
    table = ingest_table([row("storescp", 1.5, runs=3, samples=(1.0, 2.25, 1.5))])
    line = cells(table, "label storescp")
    assert line[column(table, "answered s")] == "1.50 (1.00-2.25)"
    assert line[column(table, "runs")] == "3"
    single = ingest_table([row("storescp", 1.5, samples=(1.5,))])
    assert cells(single, "label storescp")[column(single, "answered s")] == "1.50"


def test_export_ratios_against_storescu_and_against_the_ceiling() -> None:
    rows = [
        row("storescu", 0.5),
        row("export-rabbitmq-s3", 2.0),
        row("export-embedded", 1.0),
        row("download-s3", 0.8),
        row(EXPORT_CEILING, 0.8),
    ]
    table = export_table(rows)
    to_storescu = column(table, "ours/storescu")
    to_ceiling = column(table, "ours/ceiling")
    gateway = cells(table, "label export-rabbitmq-s3")
    assert (gateway[to_storescu], gateway[to_ceiling]) == ("0.25", "0.40")
    assert cells(table, "label export-embedded")[to_ceiling] == ""


def test_machine_busy_is_every_cpu_all_the_time_at_100(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.report.os.cpu_count", lambda: 2)
    rows = [row("storescp", 0.5, machine_busy_seconds=0.5), row("rabbitmq-s3", 2.0)]
    table = ingest_table(rows)
    busy = column(table, "machine busy %")
    assert cells(table, "label storescp")[busy] == "50"
    assert cells(table, "label rabbitmq-s3")[busy] == "n/a"
    export = export_table([row("storescu", 1.0, machine_busy_seconds=1.9)])
    assert cells(export, "label storescu")[column(export, "machine busy %")] == "95"
