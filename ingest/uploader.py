"""Moving released associations from the spool to object storage, then into the outbox.

Per association: upload every instance not yet stored (our file meta + the received data set
bytes, hashed on the way), record each in the journal, then put the event in the outbox and
remove the spool files. Storage outages are retried with backoff for as long as they last;
nothing is ever dropped, and a restart resumes from the journal.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from io import RawIOBase
from typing import BinaryIO

from gateway.errors import JournalError, StorageUnavailable
from gateway.metrics import IngestMetrics
from gateway.objectstore import ObjectStore
from gateway.settings import IngestSettings
from ingest.announcement import released_event
from ingest.journal import Journal, SpooledInstance, StoredObject
from ingest.journal_db import AssociationState
from ingest.part10 import InstanceIdentity, file_meta_bytes
from ingest.spool import Spool

log = logging.getLogger(__name__)

RETRY_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
UPLOAD_CONCURRENCY = 4
#: Uploaded instances are recorded in the journal this many at a time: a commit costs an
#: fsync, and one per instance made the commits, not the uploads, the slow part of a series.
STORED_BATCH = 64


class Part10Stream(RawIOBase):
    """Our file meta followed by ``length`` data set bytes of a spool file, hashed as read."""

    def __init__(self, meta: bytes, spooled: BinaryIO, length: int) -> None:
        self._meta = meta
        self._meta_position = 0
        self._spooled = spooled
        self._remaining = length
        self.sha256 = hashlib.sha256()
        self.length = len(meta) + length

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        wanted = self.length if size is None or size < 0 else size
        out = b""
        if self._meta_position < len(self._meta):
            out = self._meta[self._meta_position : self._meta_position + wanted]
            self._meta_position += len(out)
        if len(out) < wanted and self._remaining > 0:
            data = self._spooled.read(min(wanted - len(out), self._remaining))
            if not data:
                raise OSError(f"spool file ended {self._remaining} bytes early")
            self._remaining -= len(data)
            out += data
        self.sha256.update(out)
        return out


class Uploader:
    def __init__(
        self,
        journal: Journal,
        spool: Spool,
        store: ObjectStore,
        settings: IngestSettings,
        *,
        on_announced: Callable[[], None],
        metrics: IngestMetrics,
    ) -> None:
        self._metrics = metrics
        self._journal = journal
        self._spool = spool
        self._store = store
        self._settings = settings
        self._on_announced = on_announced
        self._queue: queue.Queue[str] = queue.Queue()
        self._stopping = threading.Event()
        self._pending = 0  # submitted and not yet stored; guarded by _changed
        self._changed = threading.Condition()
        self._failing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._pool = ThreadPoolExecutor(UPLOAD_CONCURRENCY, thread_name_prefix="upload")
        # The bucket may not exist yet when storage was down at start-up; it is (re)checked
        # before the first upload and after every failure.
        self._store_checked = False

    def start(self) -> None:
        for association_id in self._journal.associations_in_state(AssociationState.ANNOUNCED):
            # Announced before a crash: its objects are stored, only the spool copy may remain.
            self._spool.remove_association(association_id)
        for association_id in self._journal.associations_in_state(AssociationState.RELEASED):
            self.submit(association_id)
        self._thread.start()

    def submit(self, association_id: str) -> None:
        with self._changed:
            self._pending += 1
        self._queue.put(association_id)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or uploading (graceful shutdown).

        Returns early while storage is failing: waiting cannot help then, and the work stays
        in the journal for the next start.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending:
                if self._failing.is_set() or time.monotonic() >= deadline:
                    return False
                self._changed.wait(0.1)
        return True

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put("")  # wakes the thread
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _run(self) -> None:
        while not self._stopping.is_set():
            association_id = self._queue.get()
            if not association_id:
                continue
            self._store_until_done(association_id)
            with self._changed:
                self._pending -= 1
                self._changed.notify_all()

    def _store_until_done(self, association_id: str) -> None:
        """Store one association, retrying outages; set it aside on anything else.

        This is the thread's boundary: an unexpected error must neither kill the only uploader
        thread nor block every later association behind it.
        """
        attempt = 0
        while not self._stopping.is_set():
            try:
                self._store_association(association_id)
                self._failing.clear()
                if attempt:
                    log.info("association %s stored after %d retries", association_id, attempt)
                return
            except (StorageUnavailable, JournalError, OSError) as exc:
                self._store_checked = False
                self._failing.set()
                self._metrics.upload_failures.inc()
                delay = RETRY_BACKOFF_SECONDS[min(attempt, len(RETRY_BACKOFF_SECONDS) - 1)]
                log.warning(
                    "association %s: storing failed (%s); retrying in %.0f s",
                    association_id,
                    exc,
                    delay,
                )
                attempt += 1
                self._stopping.wait(delay)
            except Exception:  # see the docstring: quarantine, never die
                log.exception(
                    "association %s cannot be stored and is set aside; its files stay in the "
                    "spool for inspection",
                    association_id,
                )
                self._set_aside(association_id)
                return

    def _set_aside(self, association_id: str) -> None:
        try:
            self._journal.mark_failed(association_id)
        except JournalError as exc:
            log.error("association %s: cannot record that it failed: %s", association_id, exc)

    def _store_association(self, association_id: str) -> None:
        state = self._journal.state(association_id)
        if state is not AssociationState.RELEASED:
            # Handed on twice (when a worker process ends, its releases are handed on again
            # in case it could not): the first time stored it, and it may even be gone.
            log.debug("association %s is %s: nothing to store", association_id, state)
            return
        association = self._journal.association(association_id)
        instances = self._journal.instances(association_id)
        pending = [i for i in instances if i.sha256 is None]
        if pending and not self._store_checked:
            self._store.ensure_ready()
            self._store_checked = True
        uploaded: list[StoredObject] = []
        try:
            for stored in self._pool.map(
                functools.partial(self._store_instance, association.calling_ae_title), pending
            ):
                uploaded.append(stored)
                if len(uploaded) >= STORED_BATCH:
                    self._record_stored(uploaded)
        finally:
            # Also after a failed upload: what did get stored is not uploaded again.
            self._record_stored(uploaded)
        if not instances:
            # Verification-only associations (C-ECHO) carry nothing for a pipeline.
            self._journal.forget(association_id)
            self._spool.remove_association(association_id)
            return
        event = released_event(
            association,
            self._journal.instances(association_id),
            bucket=self._store.bucket,
            instance_name=self._settings.instance_name,
            now=datetime.now(UTC),
        )
        self._journal.outbox.announce(event, datetime.now(UTC))
        self._on_announced()
        try:
            self._spool.remove_association(association_id)
        except OSError as exc:
            # Everything is in storage and the event in the outbox; the next start removes
            # the leftovers. Retrying here could only repeat finished work.
            log.warning("association %s: spool files not removed: %s", association_id, exc)

    def _record_stored(self, uploaded: list[StoredObject]) -> None:
        if uploaded:
            self._journal.mark_stored(uploaded)
            self._metrics.instances_stored.inc(len(uploaded))
            uploaded.clear()

    def _store_instance(self, source_ae_title: str, instance: SpooledInstance) -> StoredObject:
        meta = file_meta_bytes(
            InstanceIdentity(
                sop_class_uid=instance.sop_class_uid,
                sop_instance_uid=instance.sop_instance_uid,
                study_instance_uid=instance.study_instance_uid,
                series_instance_uid=instance.series_instance_uid,
            ),
            instance.transfer_syntax_uid,
            source_ae_title,
            self._settings.implementation_class_uid,
            self._settings.implementation_version_name,
        )
        path = self._spool.instance_path(instance.association_id, instance.spool_name)
        with path.open("rb") as spooled:
            spooled.seek(instance.data_offset)
            stream = Part10Stream(meta, spooled, instance.data_length)
            self._store.put(instance.object_key, stream, stream.length)
        return StoredObject(
            instance.association_id,
            instance.sop_instance_uid,
            stream.length,
            stream.sha256.hexdigest(),
        )
