"""The benchmark's options for repeats and the Nagle rows."""

from __future__ import annotations

import pytest

from bench.cli import NAGLE_COUNT, _parser


def test_repeat_and_nagle_defaults() -> None:
    args = _parser().parse_args([])
    assert (args.repeat, args.nagle_count) == (None, NAGLE_COUNT)


def test_repeat_and_nagle_count_are_parsed() -> None:
    args = _parser().parse_args(["--repeat", "5", "--nagle-count", "0"])
    assert (args.repeat, args.nagle_count) == (5, 0)


@pytest.mark.parametrize("argv", [["--repeat", "0"], ["--nagle-count", "-1"], ["--repeat", "x"]])
def test_bad_counts_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(argv)
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err
