"""The benchmark's watcher of files closed in a directory (the ingest ceiling's uploader)."""

from __future__ import annotations

import struct
from pathlib import Path

from bench.inotify import IN_CLOSE_WRITE, ClosedFiles, parse_events


def record(name: bytes, padded_to: int) -> bytes:
    padded = name.ljust(padded_to, b"\0")
    return struct.pack("iIII", 1, IN_CLOSE_WRITE, 0, len(padded)) + padded


def test_names_are_read_from_padded_records() -> None:
    buffer = record(b"CT.1.2.3", 16) + record(b"CT.4", 8) + record(b"", 0)
    assert parse_events(buffer) == ["CT.1.2.3", "CT.4"]


def test_a_file_is_reported_once_closed_after_writing(tmp_path: Path) -> None:
    with ClosedFiles(tmp_path) as files:
        with (tmp_path / "first").open("wb") as stream:
            stream.write(b"x")
            assert files.read(0) == []
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "moved").write_bytes(b"y")
        (tmp_path / "elsewhere" / "moved").rename(tmp_path / "moved")
        assert files.read(1.0) == ["first", "moved"]
        assert files.read(0) == []
