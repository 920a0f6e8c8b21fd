"""When a dead ingest worker is replaced: at once after one crash, later and later in a crash
loop, at once again after a worker that lived."""

from __future__ import annotations

import pytest

from ingest.workers.pool import RESTART_DELAYS_SECONDS, restart_delay


@pytest.mark.parametrize(
    ("young_ends_in_a_row", "delay"),
    [
        pytest.param(0, 0.0, id="it lived: replaced at once"),
        pytest.param(1, 0.0, id="one young end: replaced at once"),
        pytest.param(2, 1.0, id="two in a row"),
        pytest.param(3, 2.0, id="three in a row"),
        pytest.param(4, 5.0, id="four in a row: the longest delay"),
        pytest.param(50, 5.0, id="a long crash loop stays at the longest delay"),
    ],
)
def test_restart_delay_grows_with_young_ends_in_a_row(
    young_ends_in_a_row: int, delay: float
) -> None:
    assert restart_delay(young_ends_in_a_row) == delay


def test_delays_never_shrink_as_a_crash_loop_goes_on() -> None:
    assert list(RESTART_DELAYS_SECONDS) == sorted(RESTART_DELAYS_SECONDS)
