"""The seed of a test that draws random choices (the fault tests, the generated inputs).

``GATEWAY_TEST_SEED`` (read by :class:`~gateway_client.testing.TestServices`) replays a run;
without it every run draws a fresh seed. Either way the seed is printed, and a failing test's
report names it (:func:`add_to_failed_report`), so a failure seen in CI can be replayed.
"""

from __future__ import annotations

import random

import pytest

from gateway_client.testing import TestServices

SEED_KEY = pytest.StashKey[int]()
#: Seeds are drawn below this (six digits: easy to copy from a log).
_SEEDS = 1_000_000


def draw_seed(services: TestServices) -> int:
    """``GATEWAY_TEST_SEED`` if set, else a fresh seed."""
    return services.seed if services.seed is not None else random.SystemRandom().randrange(_SEEDS)


def replay_hint(seed: int) -> str:
    return f"seed {seed} (replay with GATEWAY_TEST_SEED={seed})"


def add_to_failed_report(item: pytest.Item, report: pytest.TestReport) -> None:
    """Name the seed in the report of a test that used one and failed."""
    if report.failed and SEED_KEY in item.stash:
        report.sections.append(("seed", replay_hint(item.stash[SEED_KEY])))
