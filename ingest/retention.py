"""Keeping stored objects ``storage.retention_days`` (off by default), on its own thread.

Applied once at start-up and then every :data:`INTERVAL_SECONDS`: on S3 that sets (or removes)
the bucket's lifecycle rule and the server expires objects itself; on the file store it removes
the objects older than that (:meth:`gateway.objectstore.ObjectStore.apply_retention`). An
outage is retried after :data:`RETRY_SECONDS`; it never holds up ingest.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager
from typing import Final

from gateway.background import in_background
from gateway.errors import StorageUnavailable
from gateway.objectstore import ObjectStore

log = logging.getLogger(__name__)

#: How often the retention is applied again (a file store sweeps this often).
INTERVAL_SECONDS: Final = 3600.0
#: How soon it is tried again when the store could not be changed.
RETRY_SECONDS: Final = 60.0


def _keep_applying(store: ObjectStore, days: int | None, stop: threading.Event) -> None:
    wait = 0.0
    while not stop.wait(wait):
        try:
            removed = store.apply_retention(days)
        except StorageUnavailable as exc:
            if days is None:
                # Off: only a rule of ours left from before was to go. A store that does not
                # let us read lifecycles (permissions) has none of ours.
                log.info("retention off; bucket lifecycle not checked: %s", exc)
                return
            log.warning("retention not applied (%s); trying again in %.0f s", exc, RETRY_SECONDS)
            wait = RETRY_SECONDS
            continue
        if removed:
            log.info("retention: %d objects older than %d days removed", removed, days)
        wait = INTERVAL_SECONDS


def retaining(store: ObjectStore, days: int | None) -> AbstractContextManager[None]:
    """Apply the retention for as long as the block runs."""
    return in_background("retention", lambda stop: _keep_applying(store, days, stop))
