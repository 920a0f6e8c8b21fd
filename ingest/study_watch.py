"""Announcing stable studies, on a thread of their own.

Twice a second the watch asks the journal for the studies whose quiet time is over
(:mod:`ingest.studies`). A study that an association not yet announced still adds instances to
waits for it. Otherwise its event lists what the journal holds of the study, inline or, past
``max_event_bytes``, in a manifest stored first under the event's id; then the event goes into
the outbox with the study's new revision, in one transaction, and the relay publishes it like an
association's. A crash before that transaction builds the same event (same id, same manifest
key) again. Storage or journal trouble only delays: the watch tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Final

from pydantic import ValidationError

from contracts.events import StoredInstance
from contracts.keys import manifest_key
from gateway.background import in_background
from gateway.errors import JournalError, StorageUnavailable
from gateway.objectstore import ObjectStore
from gateway.settings import GatewaySettings
from ingest.announcement import may_fit_inline
from ingest.journal import Journal
from ingest.manifest_file import store_manifest, write_manifest
from ingest.outbox import OutboxEvent
from ingest.spool import Spool
from ingest.studies import DueStudy, StudySource
from ingest.study_announcement import study_data, study_event, study_event_id

log = logging.getLogger(__name__)

#: How often the journal is asked for studies whose quiet time is over.
POLL_SECONDS: Final = 0.5
#: How soon the watch tries again after storage or the journal failed it.
RETRY_SECONDS: Final = 5.0
#: Studies announced per look (the rest at the next).
DUE_BATCH: Final = 50
#: How often the journal's history is trimmed (studies quiet and events published longer
#: ago than ``history_days``).
FORGET_INTERVAL_SECONDS: Final = 3600.0
#: How soon a study that an association not announced yet adds to is looked at again.
IN_FLIGHT_RECHECK: Final = timedelta(seconds=2)
#: How soon a study whose event could not be built is tried again.
INVALID_RECHECK: Final = timedelta(hours=1)
#: Instances read from the journal at a time while writing a study's manifest.
MANIFEST_PAGE: Final = 1000


class StudyChanged(ValueError):
    """An association added to the study while its event was built: build it again."""


class StudyWatch:
    def __init__(
        self,
        journal: Journal,
        spool: Spool,
        store: ObjectStore,
        *,
        instance_name: str,
        max_event_bytes: int,
        history: timedelta,
        retention: timedelta | None = None,
        on_announced: Callable[[], None],
    ) -> None:
        self._journal = journal
        self._spool = spool
        self._store = store
        self._instance_name = instance_name
        self._max_event_bytes = max_event_bytes
        self._history = history
        self._retention = retention
        self._on_announced = on_announced

    @classmethod
    def configured(
        cls,
        settings: GatewaySettings,
        journal: Journal,
        spool: Spool,
        store: ObjectStore,
        on_announced: Callable[[], None],
    ) -> StudyWatch:
        quiet = [ae.ae_title for ae in settings.ingest.ae if ae.study_stable_seconds]
        forgotten = journal.studies.forget_unless_called(quiet)
        if forgotten:
            log.info("%d studies of AE titles without study_stable_seconds forgotten", forgotten)
        retention = settings.storage.retention_days
        return cls(
            journal,
            spool,
            store,
            instance_name=settings.ingest.instance_name,
            max_event_bytes=settings.ingest.max_event_bytes,
            history=timedelta(days=settings.ingest.history_days),
            # A study must not list objects the store has expired.
            retention=None if retention is None else timedelta(days=retention),
            on_announced=on_announced,
        )

    def announce_due(self, now: datetime) -> int:
        """Put the event of every study due at ``now`` in the outbox; returns how many.

        Raises JournalError, StorageUnavailable or OSError (try again later).
        """
        announced = 0
        for study in self._journal.studies.due(now, DUE_BATCH):
            if self._journal.studies.in_flight(study):
                self._journal.studies.postpone(study, now + IN_FLIGHT_RECHECK)
                continue
            try:
                announced += self._announce(study, now)
            except StudyChanged as exc:
                log.info(
                    "study %s changed while its event was built (%s); built again shortly",
                    study.study_instance_uid,
                    exc,
                )
            except ValidationError as exc:
                # What the journal holds does not make a valid event: a fault of ours, which
                # trying again twice a second would only repeat in the log.
                log.error(
                    "study %s: no valid event can be built (%s); tried again in %s",
                    study.study_instance_uid,
                    exc,
                    INVALID_RECHECK,
                )
                self._journal.studies.postpone(study, now + INVALID_RECHECK)
        if announced:
            self._on_announced()
        return announced

    def forget_history(self, now: datetime) -> int:
        """Forget the studies quiet, and the association events published, longer ago than
        the history, and the study instances whose objects have expired; returns how many."""
        before = now - self._history
        forgotten = self._journal.studies.forget_quiet(before)
        forgotten += self._journal.outbox.forget_published(before)
        if self._retention is not None:
            forgotten += self._journal.studies.forget_stored_before(now - self._retention)
        return forgotten

    def _announce(self, study: DueStudy, now: datetime) -> int:
        sources = self._journal.studies.sources(study)
        if not sources:
            self._journal.studies.forget(study)  # every association of it was dropped
            return 0
        event_id = study_event_id(study)
        count = sum(source.instance_count for source in sources)
        event = (
            self._inline_event(study, sources, event_id, now)
            if may_fit_inline(count, self._max_event_bytes)
            else None
        )
        if event is None:
            event = self._manifest_event(study, sources, event_id, now)
        if not self._journal.studies.put_event(study, event, now):
            raise StudyChanged("instances were added")
        log.info(
            "study %s of %s stable (revision %d, %d instances from %d associations): event %s",
            study.study_instance_uid,
            study.called_ae_title,
            study.revision + 1,
            count,
            len(sources),
            event_id,
        )
        return 1

    def _inline_event(
        self, study: DueStudy, sources: list[StudySource], event_id: str, now: datetime
    ) -> OutboxEvent | None:
        instances = tuple(listed.instance for listed in self._journal.studies.instances(study))
        data = study_data(
            study,
            sources,
            bucket=self._store.bucket,
            instances=instances,
            total_bytes=sum(instance.size for instance in instances),
        )
        event = study_event(data, event_id=event_id, instance_name=self._instance_name, now=now)
        return event if len(event.body) <= self._max_event_bytes else None

    def _manifest_event(
        self, study: DueStudy, sources: list[StudySource], event_id: str, now: datetime
    ) -> OutboxEvent:
        # In incoming/, which start-up and maintenance clear of leftovers after a crash.
        path = self._spool.incoming / f"study-{event_id}.jsonl"
        try:
            written = write_manifest(path, self._pages(study))
            if written.instance_count != sum(source.instance_count for source in sources):
                raise StudyChanged("the list changed while it was written")
            manifest = store_manifest(self._store, manifest_key(event_id), written)
        finally:
            path.unlink(missing_ok=True)
        for list_associations in (True, False):
            data = study_data(
                study,
                sources,
                bucket=self._store.bucket,
                instances=(),
                total_bytes=written.total_bytes,
                manifest=manifest,
                list_associations=list_associations,
            )
            event = study_event(data, event_id=event_id, instance_name=self._instance_name, now=now)
            if len(event.body) <= self._max_event_bytes:
                break
        # Without instances and associations an event is a few hundred bytes: it fits.
        return event

    def _pages(self, study: DueStudy) -> Iterator[list[StoredInstance]]:
        after = 0
        while page := self._journal.studies.instances(study, after=after, limit=MANIFEST_PAGE):
            yield [listed.instance for listed in page]
            after = page[-1].position


def _keep_watching(watch: StudyWatch, stop: threading.Event) -> None:
    forget_after = 0.0
    wait = 0.0
    while not stop.wait(wait):
        wait = POLL_SECONDS
        now = datetime.now(UTC)
        try:
            watch.announce_due(now)
            if now.timestamp() >= forget_after:
                forgotten = watch.forget_history(now)
                if forgotten:
                    log.info("%d quiet studies and published events forgotten", forgotten)
                forget_after = now.timestamp() + FORGET_INTERVAL_SECONDS
        except (JournalError, StorageUnavailable, OSError) as exc:
            log.warning(
                "stable studies not announced yet (%s); again in %.0f s", exc, RETRY_SECONDS
            )
            wait = RETRY_SECONDS


def watching_studies(
    settings: GatewaySettings,
    journal: Journal,
    spool: Spool,
    store: ObjectStore,
    on_announced: Callable[[], None],
) -> AbstractContextManager[None]:
    """Announce stable studies for as long as the block runs."""
    watch = StudyWatch.configured(settings, journal, spool, store, on_announced)
    return in_background("study-watch", lambda stop: _keep_watching(watch, stop))
