"""Carrying out one export request: send to each destination while fetching, retry, report.

Each destination gets its objects from a :class:`~export.fetch.FetchStream` of its own, a
bounded window ahead of its association: the association opens as soon as the contexts to
propose are known and the instances go out as their downloads finish. The contexts of the
objects an instance manifest lists are known before anything is fetched
(:mod:`export.announced`), so their association opens at once. For the others, a first pass
learns them from the file meta of its first window; an object needing a context not proposed
then (first met later in a mixed request) waits for a further association of the same attempt,
planned like every retry from the file meta read before (``known``, shared by the request's
destinations).

Associations are limited service-wide by one semaphore (``export.max_associations``), and per
destination by one each (``export.associations_per_destination``, below the service-wide limit
when there are several destinations), taken first: a slow or failing destination then holds at
most its own share while requests for the others go on. A request that has to wait for a slot
simply waits, it is never rejected for it (its first window is fetched meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from contracts.export import (
    DestinationResult,
    ExportCompleted,
    ExportRequested,
    InstanceOutcome,
    InstanceResult,
    destination_status,
    overall_status,
)
from contracts.keys import association_prefix
from export.announced import read_announced
from export.fetch import FetchStream, WorkingSpace, request_objects
from export.plan import (
    Context,
    InstanceMeta,
    NotFetched,
    failure,
    opening_contexts,
    passes,
    unread,
)
from export.scu import BatchOutcome, ScuIdentity, send_batch
from gateway.logs import fields
from gateway.metrics import ExportMetrics
from gateway.objectstore import ObjectStore
from gateway.settings import DestinationSettings, ExportSettings

log = logging.getLogger(__name__)


def _destination_result(name: str, results: Sequence[InstanceResult]) -> DestinationResult:
    return DestinationResult(
        name=name,
        status=destination_status(results),
        instances_sent=sum(r.status is InstanceOutcome.SENT for r in results),
        instances_failed=sum(r.status is InstanceOutcome.FAILED for r in results),
        instances=tuple(results),
    )


@dataclass
class Exporter:
    settings: ExportSettings
    identity: ScuIdentity
    store: ObjectStore
    associations: asyncio.Semaphore
    #: One per configured destination, by name.
    destination_slots: Mapping[str, asyncio.Semaphore]
    metrics: ExportMetrics
    #: Whether the working directory (under ``state_dir``) had room for the latest download.
    space: WorkingSpace = field(default_factory=WorkingSpace)

    @classmethod
    def create(
        cls,
        settings: ExportSettings,
        identity: ScuIdentity,
        store: ObjectStore,
        metrics: ExportMetrics,
    ) -> Exporter:
        """An exporter with the association slots ``settings`` give."""
        return cls(
            settings=settings,
            identity=identity,
            store=store,
            associations=asyncio.Semaphore(settings.max_associations),
            destination_slots={
                d.name: asyncio.Semaphore(settings.associations_per_destination)
                for d in settings.destinations
            },
            metrics=metrics,
        )

    async def run(self, request: ExportRequested) -> ExportCompleted:
        started_at = datetime.now(UTC)
        clock = time.monotonic()
        work_root = self.settings.state_dir / "work"
        work_root.mkdir(parents=True, exist_ok=True)
        # Cleanup errors ignored: when the request is cancelled (SIGTERM), downloads already
        # running may still be writing into the directory.
        with tempfile.TemporaryDirectory(dir=work_root, ignore_cleanup_errors=True) as workdir:
            keys, manifests = await asyncio.to_thread(
                request_objects, self.store, request.association_id, request.object_keys
            )
            if not any(self.settings.destination(name) for name in request.destinations):
                manifests = []  # nothing will be sent: nothing to plan
            announced = await asyncio.to_thread(
                read_announced, self.store, keys, manifests, Path(workdir)
            )
            nothing_stored: list[InstanceResult] = []
            if not keys and request.association_id is not None:
                nothing_stored = [
                    unread(
                        association_prefix(request.association_id),
                        f"no objects are stored for association {request.association_id}",
                    )
                ]
            # Shared, so that what one destination read plans the other's retries; what the
            # manifests say plans the first associations.
            known: dict[str, InstanceMeta] = dict(announced)
            contexts = {key: meta.context for key, meta in announced.items()}
            sends = [
                asyncio.create_task(
                    self._to_destination(
                        name, keys, nothing_stored, Path(workdir), _DestinationRun(known, contexts)
                    )
                )
                for name in request.destinations
            ]
            try:
                destinations = await asyncio.gather(*sends)
            except BaseException:
                # A storage outage met by one destination puts the whole request back: the
                # others stop too, before their working directory goes.
                for send in sends:
                    send.cancel()
                await asyncio.wait(sends)
                raise
        completed = ExportCompleted(
            export_id=request.export_id,
            status=overall_status(destinations),
            correlation=request.correlation,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            destinations=tuple(destinations),
        )
        duration = time.monotonic() - clock
        log.info(
            "export %s %s in %.1fs: %s",
            request.export_id,
            completed.status,
            duration,
            ", ".join(
                f"{d.name} sent={d.instances_sent} failed={d.instances_failed}"
                for d in destinations
            ),
            extra=fields(
                event="export",
                export_id=request.export_id,
                status=completed.status.value,
                duration_seconds=round(duration, 3),
                destinations={
                    d.name: {"sent": d.instances_sent, "failed": d.instances_failed}
                    for d in destinations
                },
            ),
        )
        return completed

    async def _to_destination(
        self,
        name: str,
        keys: list[str],
        nothing_stored: list[InstanceResult],
        workdir: Path,
        run: _DestinationRun,
    ) -> DestinationResult:
        destination = self.settings.destination(name)
        if destination is None:
            error = f"unknown destination {name!r}"
            return _destination_result(
                name,
                [unread(key, error) for key in keys]
                + [r.model_copy(update={"error": f"{error}; {r.error}"}) for r in nothing_stored],
            )
        pending = list(keys)
        for attempt in range(self.settings.retries + 1):
            pending = await self._attempt(destination, pending, workdir, run)
            if not pending or run.permanent or attempt == self.settings.retries:
                break
            delay = self.settings.backoff(attempt + 1)
            log.warning(
                "destination %s: %s; %d instance(s) retried in %.1f s (retry %d of %d)",
                name,
                run.error,
                len(pending),
                delay,
                attempt + 1,
                self.settings.retries,
            )
            await asyncio.sleep(delay)
        for key in pending:
            meta, why = run.known.get(key), run.reasons.get(key, run.error)
            run.results[key] = unread(key, why) if meta is None else failure(meta, why)
        ordered = [run.results[key] for key in keys if key in run.results]
        ordered += [run.unreadable[key] for key in keys if key in run.unreadable]
        return _destination_result(name, ordered + nothing_stored)

    async def _attempt(
        self, destination: DestinationSettings, keys: list[str], workdir: Path, run: _DestinationRun
    ) -> list[str]:
        """Send ``keys`` once, over as few associations as their contexts allow; returns the
        keys to try again."""
        retry: list[str] = []
        work = keys
        while work:
            # Deferred keys come back with their file meta known, so the next round plans them
            # up front (only an object replaced meanwhile can be deferred again).
            deferred: list[str] = []
            planned = passes(work, run.known)
            for index, (batch, proposed) in enumerate(planned):
                outcome = await self._batch(destination, batch, proposed, workdir, run)
                run.results.update((r.object_key, r) for r in outcome.results)
                run.unreadable.update((r.object_key, r) for r in outcome.unreadable)
                retry += list(outcome.retry)
                run.reasons.update(outcome.retry)
                deferred += outcome.deferred
                run.error = outcome.error or run.error
                run.permanent = run.permanent or outcome.permanent
                if outcome.no_association:
                    # The destination cannot be reached now: the other batches wait too.
                    later = [key for batch_keys, _ in planned[index + 1 :] for key in batch_keys]
                    run.reasons.update(dict.fromkeys(later + deferred, run.error))
                    return retry + later + deferred
            work = deferred
        return retry

    async def _batch(
        self,
        destination: DestinationSettings,
        keys: list[str],
        proposed: list[Context] | None,
        workdir: Path,
        run: _DestinationRun,
    ) -> BatchOutcome:
        """One association for ``keys``: ``proposed`` as planned, or (None) the contexts of the
        first window of objects fetched."""
        with FetchStream(
            self.store, keys, workdir, run.known, self.space, announced=run.announced
        ) as stream:
            skipped: list[InstanceResult | NotFetched] = []
            if proposed is None:
                readable, skipped = await stream.head()
                proposed = opening_contexts(readable)
                if not proposed:  # nothing readable at all: nothing to associate for
                    return _skipped_only(skipped)
            async with self.destination_slots[destination.name], self.associations:
                started = time.monotonic()
                outcome = await asyncio.to_thread(
                    partial(send_batch, alone=len(keys) == 1),
                    self.identity,
                    self.settings,
                    destination,
                    proposed,
                    stream,
                )
                self.metrics.association_duration.labels(destination.name).observe(
                    time.monotonic() - started
                )
        before = _skipped_only(skipped)
        outcome.unreadable[:0] = before.unreadable
        outcome.retry.update(before.retry)
        outcome.error = outcome.error or before.error
        return outcome


def _skipped_only(skipped: Sequence[InstanceResult | NotFetched]) -> BatchOutcome:
    """The outcome of objects skipped before any association: unreadable ones are final,
    those not fetched for want of room are for another attempt."""
    outcome = BatchOutcome(unreadable=[s for s in skipped if isinstance(s, InstanceResult)])
    for item in skipped:
        if isinstance(item, NotFetched):
            outcome.retry[item.object_key] = item.reason
            outcome.error = item.reason
    return outcome


@dataclass
class _DestinationRun:
    """What one destination's attempts found out so far."""

    known: dict[str, InstanceMeta]
    #: What the instance manifests say each object is (checked against its file meta).
    announced: Mapping[str, Context]
    results: dict[str, InstanceResult] = field(default_factory=dict)
    unreadable: dict[str, InstanceResult] = field(default_factory=dict)
    #: Why each key still pending was not sent, as its last attempt found.
    reasons: dict[str, str] = field(default_factory=dict)
    #: The latest association-level problem (for the retry log).
    error: str = ""
    permanent: bool = False
