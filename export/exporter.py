"""Carrying out one export request: fetch, send to each destination with retries, report.

Associations are limited service-wide by one semaphore (``export.max_associations``); a request
that has to wait for a slot simply waits, it is never rejected for it.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
from export.fetch import fetch, request_keys
from export.plan import OutgoingInstance, batches, failure
from export.scu import ScuIdentity, send_batch
from gateway.logs import fields
from gateway.metrics import ExportMetrics
from gateway.objectstore import ObjectStore
from gateway.settings import ExportSettings

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
    metrics: ExportMetrics

    async def run(self, request: ExportRequested) -> ExportCompleted:
        started_at = datetime.now(UTC)
        clock = time.monotonic()
        work_root = self.settings.state_dir / "work"
        work_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work_root) as workdir:
            keys = await asyncio.to_thread(
                request_keys, self.store, request.association_id, request.object_keys
            )
            ready, unavailable = await asyncio.to_thread(fetch, self.store, keys, Path(workdir))
            if not keys and request.association_id is not None:
                unavailable = [
                    InstanceResult(
                        object_key=association_prefix(request.association_id),
                        sop_instance_uid=None,
                        status=InstanceOutcome.FAILED,
                        dicom_status=None,
                        error=f"no objects are stored for association {request.association_id}",
                    )
                ]
            destinations = await asyncio.gather(
                *(self._to_destination(name, ready, unavailable) for name in request.destinations)
            )
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
        ready: list[OutgoingInstance],
        unavailable: list[InstanceResult],
    ) -> DestinationResult:
        destination = self.settings.destination(name)
        if destination is None:
            error = f"unknown destination {name!r}"
            return _destination_result(
                name,
                [failure(i, error) for i in ready]
                + [r.model_copy(update={"error": f"{error}; {r.error}"}) for r in unavailable],
            )
        results: dict[str, InstanceResult] = {}
        pending = list(ready)
        error = ""
        for attempt in range(self.settings.retries + 1):
            retry: list[OutgoingInstance] = []
            permanent = False
            for batch in batches(pending):
                async with self.associations:
                    started = time.monotonic()
                    outcome = await asyncio.to_thread(
                        send_batch, self.identity, self.settings, destination, batch
                    )
                    self.metrics.association_duration.labels(name).observe(
                        time.monotonic() - started
                    )
                results.update((r.object_key, r) for r in outcome.results)
                retry += outcome.retry
                error = outcome.error or error
                permanent = permanent or outcome.permanent
            pending = retry
            if not pending or permanent or attempt == self.settings.retries:
                break
            delay = self.settings.backoff(attempt + 1)
            log.warning(
                "destination %s: %s; %d instance(s) retried in %.1f s (retry %d of %d)",
                name,
                error,
                len(pending),
                delay,
                attempt + 1,
                self.settings.retries,
            )
            await asyncio.sleep(delay)
        for instance in pending:
            results[instance.object_key] = failure(instance, error)
        ordered = [results[i.object_key] for i in ready] + list(unavailable)
        return _destination_result(name, ordered)
