"""Putting a released association's event in the outbox once every instance is stored.

Runs on the uploader's dispatcher thread (:mod:`ingest.uploader`). A list that fits in
``ingest.max_event_bytes`` goes in the event; a longer one is written page by page to a
manifest file in the association's spool directory, stored as
``<association-id>/instances.jsonl``, and named by the event (:mod:`contracts.manifest`). Memory
stays bounded by a page of the journal, whatever the association. The manifest is stored before
the event goes into the outbox, so a published event never names a missing object; a crash in
between writes and stores the same manifest again on the next start. For a called AE title
with a quiet time, the same transaction adds the instances to their studies
(:mod:`ingest.studies`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Final

from contracts.events import StoredInstance
from contracts.keys import manifest_key
from gateway.objectstore import ObjectStore
from gateway.settings import IngestSettings
from ingest.announcement import (
    MIN_LISTED_INSTANCE_BYTES,
    ManifestSummary,
    manifest_data,
    may_fit_inline,
    released_data,
    released_event,
    stored_instance,
)
from ingest.journal import AssociationRecord, Journal, SpooledInstance
from ingest.manifest_file import store_manifest, write_manifest
from ingest.outbox import OutboxEvent
from ingest.spool import Spool
from ingest.studies import record_announced

log = logging.getLogger(__name__)

#: Journal rows read at a time while writing a manifest.
MANIFEST_PAGE: Final = 1000
#: The manifest's file in the association's spool directory (removed with it).
MANIFEST_SPOOL_NAME: Final = "instances.jsonl"


class Announcer:
    def __init__(
        self,
        journal: Journal,
        spool: Spool,
        store: ObjectStore,
        settings: IngestSettings,
        on_announced: Callable[[], None],
    ) -> None:
        self._journal = journal
        self._spool = spool
        self._store = store
        self._settings = settings
        self._on_announced = on_announced
        #: Called AE titles whose studies are announced when stable: their quiet times.
        self._study_stable_seconds = {
            ae.ae_title: ae.study_stable_seconds for ae in settings.ae if ae.study_stable_seconds
        }

    def announce(self, association_id: str) -> None:
        """Every instance is stored: the event goes into the outbox, the spool copy goes.

        Raises JournalError, StorageUnavailable or OSError (retry later).
        """
        limit = self._settings.max_event_bytes
        first = self._journal.instances(
            association_id, limit=limit // MIN_LISTED_INSTANCE_BYTES + 1
        )
        if not first:
            # Verification-only associations (C-ECHO) carry nothing for a pipeline.
            self._journal.forget(association_id)
            self._spool.remove_association(association_id)
            return
        association = self._journal.association(association_id)
        event = (
            self._inline_event(association, first) if may_fit_inline(len(first), limit) else None
        )
        if event is None:
            event = self._manifest_event(association)
        now = datetime.now(UTC)
        stable_seconds = self._study_stable_seconds.get(association.called_ae_title, 0.0)
        self._journal.outbox.announce(
            event,
            now,
            also=(
                (lambda cur: record_announced(cur, association_id, stable_seconds, now))
                if stable_seconds
                else None
            ),
        )
        self._on_announced()
        try:
            self._spool.remove_association(association_id)
        except OSError as exc:
            # Everything is in storage and the event in the outbox; the next start removes
            # the leftovers. Retrying here could only repeat finished work.
            log.warning("association %s: spool files not removed: %s", association_id, exc)

    def _inline_event(
        self, association: AssociationRecord, instances: list[SpooledInstance]
    ) -> OutboxEvent | None:
        """The event listing ``instances`` (all of them), or None if it would be too large."""
        event = released_event(
            association,
            released_data(association, instances, self._store.bucket),
            instance_name=self._settings.instance_name,
            now=datetime.now(UTC),
        )
        return event if len(event.body) <= self._settings.max_event_bytes else None

    def _manifest_event(self, association: AssociationRecord) -> OutboxEvent:
        association_id = association.association_id
        summary = self._store_manifest(association_id)
        log.info(
            "association %s: %d instances listed in %s (%d bytes), not in the event",
            association_id,
            summary.instance_count,
            manifest_key(association_id),
            summary.size,
        )
        return released_event(
            association,
            manifest_data(association, summary, self._store.bucket),
            instance_name=self._settings.instance_name,
            now=datetime.now(UTC),
            subject=summary.first_study_instance_uid,
        )

    def _store_manifest(self, association_id: str) -> ManifestSummary:
        """Write the manifest from the journal a page at a time, then store it."""
        path = self._spool.association_dir(association_id) / MANIFEST_SPOOL_NAME
        written = write_manifest(path, self._pages(association_id))
        if not written.instance_count:
            raise ValueError(f"association {association_id} has no instances to list")
        store_manifest(self._store, manifest_key(association_id), written)
        return ManifestSummary(
            written.size,
            written.sha256,
            written.instance_count,
            written.total_bytes,
            written.first_study_instance_uid,
        )

    def _pages(self, association_id: str) -> Iterator[list[StoredInstance]]:
        after = -1
        while page := self._journal.instances(association_id, after=after, limit=MANIFEST_PAGE):
            yield [stored_instance(instance) for instance in page]
            after = page[-1].received_seq
