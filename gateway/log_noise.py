"""Library log records that repeat what the gateway says itself, taken down a level.

aiormq logs an ERROR each time a connection attempt fails ("error when creating transport")
and then raises the error to its caller, which is ours: the gateway's own line says it, with
what happens next ("...; retrying in 5 s"), so aiormq's is dropped. When the broker closes an
open connection (a restart), aiormq's ERROR is the only line that says so until the robust
connection's reconnect attempts warn; it stays, as a WARNING, since the connection comes back
by itself. pynetdicom's records of a failed connect are handled where export reports the
failure (gateway/netdicom/connect_failures.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

#: Logger -> (start of the record's format string -> the level it is logged at; None: dropped).
NOISE: Mapping[str, Mapping[str, int | None]] = {
    "aiormq.connection": {
        "error when creating transport": None,
        "Unexpected connection close from remote": logging.WARNING,
    },
}


class Demote(logging.Filter):
    """Records whose format string starts with one of ``rules``' keys are logged at that level
    (never higher than they came), or dropped for None."""

    def __init__(self, rules: Mapping[str, int | None]) -> None:
        super().__init__()
        self._rules = dict(rules)

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True
        for start, level in self._rules.items():
            if record.msg.startswith(start):
                if level is None:
                    return False
                if record.levelno > level:
                    record.levelno = level
                    record.levelname = logging.getLevelName(level)
                return True
        return True


def quiet_library_noise() -> None:
    """Install the filters of :data:`NOISE` (once: calling again replaces them)."""
    for name, rules in NOISE.items():
        logger = logging.getLogger(name)
        for installed in [f for f in logger.filters if isinstance(f, Demote)]:
            logger.removeFilter(installed)
        logger.addFilter(Demote(rules))
