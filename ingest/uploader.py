"""Moving instances from the spool to object storage while their association is still open.

Each instance is uploaded as soon as it is durable in the spool (:meth:`Uploader.spooled`),
:data:`UPLOAD_CONCURRENCY` at a time over all associations, taken from each in turn
(:mod:`ingest.upload_queue`). Once an association is released (:meth:`Uploader.released`) and
every instance of it is stored, its event goes into the outbox and its spool files go: at the
release only the last few uploads remain. An aborted association (:meth:`Uploader.aborted`) has
its objects deleted by its key prefix once none of its uploads is in progress, then its files
and journal rows. Storage outages are retried with backoff for as long as they last; nothing
is ever dropped, and a restart resumes from the journal.

One thread, the dispatcher, reads and writes the journal and decides; the upload threads only
move bytes (:mod:`ingest.object_upload`) and report back; the event is built and put in the
outbox by :mod:`ingest.announcer`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from gateway.errors import JournalError, StorageUnavailable
from gateway.metrics import IngestMetrics
from gateway.objectstore import ObjectStore
from gateway.settings import IngestSettings
from ingest.announcer import Announcer
from ingest.journal import Journal, SpooledInstance
from ingest.journal_db import AssociationState
from ingest.object_upload import (
    Outcome,
    Removed,
    Uploaded,
    UploadFailed,
    attempt_removal,
    attempt_upload,
)
from ingest.spool import Spool
from ingest.upload_queue import UploadQueue

log = logging.getLogger(__name__)

RETRY_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
#: Uploads at once over all associations (the storage server's round trips, not our CPU, are
#: what they wait on).
UPLOAD_CONCURRENCY = 8
#: Associations whose instances may be uploaded.
STORABLE = (AssociationState.OPEN, AssociationState.RELEASING, AssociationState.RELEASED)


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
        self._announcer = Announcer(journal, spool, store, settings, on_announced)
        self._changed = threading.Condition()
        # Guarded by _changed: what the sink calls and the upload threads hand the dispatcher.
        self._dirty: dict[str, None] = {}  # associations to look at again, in order
        self._discard: dict[str, None] = {}  # aborted associations to remove
        self._outcomes: list[Outcome] = []
        self._stopping = False
        # The dispatcher's own.
        self._queue = UploadQueue()
        #: Associations marked in_storage by this process, with the calling AE title that
        #: goes into their objects' file meta (read once, not per upload).
        self._storing: dict[str, str] = {}
        self._removing: set[str] = set()  # associations whose objects are being deleted
        self._unrecorded: list[Uploaded] = []  # stored, but the journal did not take it yet
        self._attempt = 0
        self._retry_at = 0.0
        self._failing = threading.Event()
        # The bucket may not exist yet when storage was down at start-up; it is (re)checked
        # before the first upload and after every failure.
        self._store_checked = False
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._pool = ThreadPoolExecutor(UPLOAD_CONCURRENCY, thread_name_prefix="upload")

    # -- what the SCP calls (any thread) ----------------------------------------------------

    def spooled(self, association_id: str) -> None:
        """An instance of the association is durable in the spool and the journal."""
        self._look_at(association_id)

    def released(self, association_id: str) -> None:
        """The association's release is recorded: announce it once everything is stored."""
        self._look_at(association_id)

    def aborted(self, association_id: str) -> None:
        """The aborted association is due for removal: its objects, files and rows."""
        with self._changed:
            self._discard[association_id] = None
            self._changed.notify_all()

    def _look_at(self, association_id: str) -> None:
        with self._changed:
            self._dirty[association_id] = None
            self._changed.notify_all()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        for association_id in self._journal.associations_in_state(AssociationState.ANNOUNCED):
            # Announced before a crash: its objects are stored, only the spool copy may remain.
            self._spool.remove_association(association_id)
        for association_id in self._journal.associations_in_state(AssociationState.RELEASED):
            self.released(association_id)
        self._thread.start()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is waiting or being uploaded (graceful shutdown).

        Returns early while storage is failing: waiting cannot help then, and the work stays
        in the journal for the next start.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._idle_locked():
                if self._failing.is_set() or time.monotonic() >= deadline:
                    return False
                self._changed.wait(0.1)
        return True

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join()
        self._pool.shutdown(wait=True)
        # What finished meanwhile is recorded, so the next start does not upload it again.
        finished = [u.stored for u in self._unrecorded]
        finished += [o.stored for o in self._outcomes if isinstance(o, Uploaded)]
        if finished:
            try:
                self._journal.mark_stored(finished)
            except JournalError as exc:
                log.warning("%d uploads not recorded; they are repeated: %s", len(finished), exc)

    # -- the dispatcher -----------------------------------------------------------------------

    def _idle_locked(self) -> bool:
        return not (
            self._dirty
            or self._discard
            or self._outcomes
            or self._queue.waiting()
            or self._queue.in_progress()
            or self._removing
            or self._unrecorded
        )

    def _may_start(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _ready_locked(self) -> bool:
        """Whether the dispatcher has something to do now (called on its own thread)."""
        if self._stopping or self._dirty or self._outcomes:
            return True
        if not self._may_start():
            return False
        starts = self._queue.waiting() and self._queue.in_progress() < UPLOAD_CONCURRENCY
        removals = any(
            a not in self._removing and not self._queue.uploading(a) for a in self._discard
        )
        return bool(starts or removals or self._unrecorded)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._ready_locked():
                    backing_off = self._retry_at - time.monotonic()
                    self._changed.wait(backing_off if backing_off > 0 else None)
                if self._stopping:
                    return
                dirty, self._dirty = list(self._dirty), {}
                outcomes, self._outcomes = self._outcomes, []
                discard = [a for a in self._discard if a not in self._removing]
            try:
                self._step(dirty, outcomes, discard)
            except Exception:  # the dispatcher must outlive any surprise; the journal keeps all
                log.exception("uploader: unexpected error; retrying")
                self._back_off()
                with self._changed:
                    self._dirty.update(dict.fromkeys(dirty))
            with self._changed:
                self._changed.notify_all()  # for wait_idle

    def _step(self, dirty: list[str], outcomes: list[Outcome], discard: list[str]) -> None:
        self._take_outcomes(outcomes)
        for association_id in dirty:
            self._look(association_id)
        if self._may_start():
            for association_id in discard:
                self._start_removal(association_id)
            self._start_uploads()

    def _back_off(self) -> None:
        self._store_checked = False
        self._failing.set()
        if time.monotonic() < self._retry_at:
            return  # one more failure of the same round: the wait is set already
        delay = RETRY_BACKOFF_SECONDS[min(self._attempt, len(RETRY_BACKOFF_SECONDS) - 1)]
        self._attempt += 1
        self._retry_at = time.monotonic() + delay

    def _succeeded(self) -> None:
        if self._attempt:
            log.info("storage answers again after %d failed attempts", self._attempt)
        self._attempt = 0
        self._failing.clear()

    def _look(self, association_id: str) -> None:
        """Queue what of the association is not stored yet; announce it when all is."""
        try:
            state = self._journal.state(association_id)
            if state not in STORABLE:
                self._queue.drop(association_id)
                self._storing.pop(association_id, None)
                return
            unstored = self._journal.instances(association_id, unstored=True)
            if unstored and association_id not in self._storing:
                calling = self._journal.association(association_id).calling_ae_title
                if not self._journal.start_storing(association_id):
                    self._queue.drop(association_id)  # aborted meanwhile
                    return
                self._storing[association_id] = calling
            self._queue.add(unstored)
            if state is AssociationState.RELEASED and not self._queue.holds(association_id):
                self._storing.pop(association_id, None)
                self._announcer.announce(association_id)
        except (JournalError, StorageUnavailable, OSError) as exc:
            log.warning("association %s: %s; looked at again later", association_id, exc)
            self._back_off()
            self._look_at(association_id)
        except Exception:  # retrying cannot fix it: set aside, as an upload's own failure
            log.exception("association %s cannot be stored", association_id)
            self._set_aside(association_id)

    def _take_outcomes(self, outcomes: list[Outcome]) -> None:
        uploaded, self._unrecorded = self._unrecorded, []
        for outcome in outcomes:
            match outcome:
                case Uploaded():
                    uploaded.append(outcome)
                case UploadFailed(instance, error):
                    self._upload_failed(instance, error)
                case Removed(association_id, error):
                    self._removed(association_id, error)
        if not uploaded:
            return
        try:
            self._journal.mark_stored([u.stored for u in uploaded])
        except JournalError as exc:
            # Still counted as in progress, so that nothing uploads them again meanwhile.
            log.warning("%d uploads not recorded yet: %s", len(uploaded), exc)
            self._unrecorded = uploaded
            self._back_off()
            return
        for done in uploaded:
            self._queue.finished(done.instance)
        # Only an association with nothing left waiting or uploading can be announced now.
        for association_id in {done.instance.association_id for done in uploaded}:
            if not self._queue.holds(association_id):
                self._look_at(association_id)
        self._metrics.instances_stored.inc(len(uploaded))
        self._succeeded()

    def _upload_failed(self, instance: SpooledInstance, error: Exception) -> None:
        association_id = instance.association_id
        try:
            state = self._journal.state(association_id)
        except JournalError:
            state = AssociationState.OPEN  # cannot tell: retry it like an outage
        if state not in STORABLE:
            self._queue.finished(instance)  # aborted meanwhile: its files may be gone
            self._look_at(association_id)
            return
        if isinstance(error, StorageUnavailable | JournalError | OSError):
            self._metrics.upload_failures.inc()
            self._back_off()
            log.warning(
                "association %s: storing failed for %s (%s); retrying in %.0f s",
                association_id,
                instance.object_key,
                error,
                self._retry_at - time.monotonic(),
            )
            # Queued again from the journal, which may have replaced it meanwhile (the same
            # SOP instance sent again, its earlier file removed): retrying the instance itself
            # could fail for ever.
            self._queue.finished(instance)
            self._look_at(association_id)
            return
        log.error("association %s cannot be stored: %r", association_id, error)
        self._queue.finished(instance)
        self._set_aside(association_id)

    def _set_aside(self, association_id: str) -> None:
        """Retrying cannot help: the association waits, failed, for someone to look at it."""
        log.error(
            "association %s is set aside; its files stay in the spool for inspection",
            association_id,
        )
        self._queue.drop(association_id)
        self._storing.pop(association_id, None)
        try:
            self._journal.mark_failed(association_id)
        except JournalError as exc:
            log.error("association %s: cannot record that it failed: %s", association_id, exc)

    def _start_uploads(self) -> None:
        while self._queue.in_progress() < UPLOAD_CONCURRENCY:
            instance = self._queue.take()
            if instance is None:
                return
            self._pool.submit(self._upload, instance, self._storing[instance.association_id])

    def _start_removal(self, association_id: str) -> None:
        """Remove an aborted association once none of its uploads is in progress."""
        if self._queue.uploading(association_id):
            return  # looked at again when they end
        self._queue.drop(association_id)
        self._storing.pop(association_id, None)
        try:
            in_storage = self._journal.in_storage(association_id)
        except JournalError as exc:
            log.warning("association %s: not removed yet: %s", association_id, exc)
            self._back_off()
            return
        self._removing.add(association_id)
        if in_storage:
            self._pool.submit(self._remove_objects, association_id)
        else:
            self._removed(association_id, None)

    def _removed(self, association_id: str, error: Exception | None) -> None:
        self._removing.discard(association_id)
        if error is None:
            try:
                self._spool.remove_association(association_id)
                self._journal.forget(association_id)
            except (JournalError, OSError) as exc:
                error = exc
        if error is not None:
            log.warning(
                "association %s: aborted, not removed yet (%s); retrying", association_id, error
            )
            self._back_off()
            return
        with self._changed:
            self._discard.pop(association_id, None)
        self._succeeded()
        log.info("association %s: aborted, its objects and files removed", association_id)

    # -- the upload threads -------------------------------------------------------------------

    def _report(self, outcome: Outcome) -> None:
        with self._changed:
            self._outcomes.append(outcome)
            self._changed.notify_all()

    def _upload(self, instance: SpooledInstance, calling_ae_title: str) -> None:
        if not self._store_checked:
            try:
                self._store.ensure_ready()
            except StorageUnavailable as exc:
                self._report(UploadFailed(instance, exc))
                return
            self._store_checked = True
        path = self._spool.instance_path(instance.association_id, instance.spool_name)
        self._report(attempt_upload(self._store, instance, path, calling_ae_title, self._settings))

    def _remove_objects(self, association_id: str) -> None:
        self._report(attempt_removal(self._store, association_id))
