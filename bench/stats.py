"""Several runs of a row made into one, and the export ceiling made from two rows.

The machine is shared and noisy, so every row runs ``--repeat`` times, its runs alternating
with those of the other rows of its data set, and the report shows the median of each number.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace

from bench.report import EXPORT_CEILING, Row


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that are there; None when there are none."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _median_int(values: Sequence[int | None]) -> int | None:
    found = median([None if value is None else float(value) for value in values])
    return None if found is None else round(found)


def _key(row: Row) -> tuple[str, str, str, int]:
    return (row.dataset, row.who, row.label, row.associations)


def merge_runs(rows: Sequence[Row]) -> list[Row]:
    """One row per (data set, receiver, label, associations), in the order of first
    appearance, with the median of each number over its runs.

    A run that failed keeps the merged row failed: its verdict (the first that is not ok)
    and its note stay. Runs without a time (failed, skipped) are not counted in ``runs``.
    """
    groups: dict[tuple[str, str, str, int], list[Row]] = {}
    for row in rows:
        groups.setdefault(_key(row), []).append(row)
    return [_merged(group) for group in groups.values()]


def _merged(runs: list[Row]) -> Row:
    first = runs[0]
    timed = [run for run in runs if run.seconds is not None]

    def over(value: Callable[[Row], float | None]) -> float | None:
        return median([value(run) for run in timed])

    verdicts = [run.verdict for run in runs if run.verdict is not None]
    bad = next((verdict for verdict in verdicts if not verdict.ok), None)
    notes = list(dict.fromkeys(run.note for run in runs if run.note))
    return replace(
        first,
        seconds=over(lambda run: run.seconds),
        event_seconds=over(lambda run: run.event_seconds),
        first_event_seconds=over(lambda run: run.first_event_seconds),
        receiver_cpu_seconds=over(lambda run: run.receiver_cpu_seconds),
        machine_busy_seconds=over(lambda run: run.machine_busy_seconds),
        peak_rss=_median_int([run.peak_rss for run in timed]),
        runs=len(timed),
        samples=tuple(run.seconds for run in timed if run.seconds is not None),
        verdict=bad or (verdicts[-1] if verdicts else None),
        note="; ".join(notes),
    )


def export_ceiling(sender: Row, download: Row) -> Row:
    """What export could reach on this machine: the slower of ``sender`` (storescu sending
    the files from local disk) and ``download`` (the same objects fetched from S3), both
    already merged. Fails when either failed; the verdict is the download's unless the
    sender's is worse."""
    seconds = None
    if sender.seconds is not None and download.seconds is not None:
        seconds = max(sender.seconds, download.seconds)
    verdict = download.verdict
    if sender.verdict is not None and (verdict is None or not sender.verdict.ok):
        verdict = sender.verdict
    slower, busy = "", None
    if seconds is not None:
        slowest = sender if seconds == sender.seconds else download
        slower = " (storescu)" if slowest is sender else " (download)"
        busy = slowest.machine_busy_seconds
    notes = [note for note in (sender.note, download.note) if note]
    return replace(
        download,
        who=EXPORT_CEILING,
        label=f"ceiling: slower of storescu and S3 download{slower}",
        seconds=seconds,
        machine_busy_seconds=busy,
        peak_rss=None,
        runs=min(sender.runs, download.runs),
        samples=(),
        verdict=verdict,
        note="; ".join(notes),
    )
