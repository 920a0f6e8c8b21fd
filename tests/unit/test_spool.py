"""The spool's sweep of ``incoming/``: partial data sets of dead transfers go, live ones stay."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.spool import Spool


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    return spool


def _aged(path: Path, seconds: float) -> Path:
    path.write_bytes(b"partial")
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_only_files_untouched_for_longer_than_the_limit_go(spool: Spool) -> None:
    stale = _aged(spool.incoming / "stale.dcm", 120)
    live = _aged(spool.incoming / "live.dcm", 5)
    assert spool.clear_incoming(older_than=60) == 1
    assert not stale.exists()
    assert live.exists()
    assert spool.clear_incoming() == 1  # at start-up everything there is a leftover
    assert not live.exists()


class _Listing(type(Path())):  # type: ignore[misc]
    """``incoming/`` as a sweep sees it when a file is adopted between listing and looking."""

    def iterdir(self) -> Iterator[Path]:
        listed = list(super().iterdir())
        (self / "adopted.dcm").unlink()
        yield from listed


def test_a_file_adopted_while_the_sweep_runs_is_passed_over(spool: Spool) -> None:
    _aged(spool.incoming / "adopted.dcm", 120)
    stale = _aged(spool.incoming / "stale.dcm", 120)
    spool.incoming = _Listing(spool.incoming)
    # It used to raise FileNotFoundError and end that maintenance pass (logged as an error).
    assert spool.clear_incoming(older_than=60) == 1
    assert not stale.exists()
