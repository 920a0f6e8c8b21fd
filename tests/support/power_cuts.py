"""What the power-loss suites share (tests/integration/test_*_power_loss.py): the plan of
cuts, and reading a service's SQLite file between its kill and the cut without changing it.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TypeVar

Moment = TypeVar("Moment")


def schedule(rng: random.Random, moments: Sequence[Moment], cuts: int) -> list[Moment]:
    """``cuts`` moments: every moment once per round, each round in an order of its own."""
    rounds: list[Moment] = []
    for _ in range(math.ceil(cuts / len(moments))):
        shuffled = list(moments)
        rng.shuffle(shuffled)
        rounds += shuffled
    return rounds[:cuts]


@contextmanager
def read_only(database: Path) -> Iterator[sqlite3.Connection]:
    """``database`` opened read-only, and attached to its ``-shm`` index at once (a connection
    does so at its first query). Not an ordinary connection: the last one to close checkpoints
    the write-ahead log into the database and deletes it, so reading a killed service's file
    before the cut would change what the cut finds.

    To read what a service had committed when it was killed, open this before the kill and
    read after it. A connection attaching after the kill is the file's only one, and the first
    resets the index and rebuilds it from the write-ahead log as it finds it: with a commit
    whose frames were written and whose sync had not returned, which a cut rightly takes back
    (shown with a writer whose ``fdatasync`` strace held back: the killed writer never saw its
    commit, a connection attaching after the kill saw it). One attached across the kill keeps
    the index as the service left it, which counts a commit only once its sync has returned."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        yield db
