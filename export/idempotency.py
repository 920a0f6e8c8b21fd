"""``export_id`` as an idempotency key: the same request again, or a different one reusing it.

A request whose ``export_id`` has a recorded completion is not carried out again. If it is the
same request (a redelivery, a retry by its requester), the recorded completion is published
again, unchanged. If its content differs, its requester would otherwise receive another
request's completion, on that request's routing key, and wait for ever: it gets a completion of
its own instead (:func:`conflict_completion`), and nothing is sent.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from contracts.export import (
    DestinationResult,
    ExportCompleted,
    ExportRequested,
    ExportStatus,
    InstanceResult,
)
from contracts.keys import association_prefix
from export.plan import unread


def request_digest(request: ExportRequested) -> str:
    """The SHA-256 of what ``request`` asks for (every field, in a canonical JSON form):
    equal for redeliveries of one request, different for any other."""
    canonical = json.dumps(
        request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def conflict_reason(export_id: str, first_finished_at: datetime) -> str:
    return (
        f"export_id {export_id} was already used by a different request, completed at "
        f"{first_finished_at.isoformat()}; nothing was sent for this one (give every request "
        f"an export_id of its own)"
    )


def conflict_completion(
    request: ExportRequested, first_finished_at: datetime, now: datetime
) -> ExportCompleted:
    """The completion of a request refused because its ``export_id`` names another request:
    ``failed`` at every destination, each requested object (or the association) with the
    reason."""
    reason = conflict_reason(request.export_id, first_finished_at)
    if request.association_id is not None:
        keys = [association_prefix(request.association_id)]
    else:
        keys = list(request.object_keys or ())
    results: tuple[InstanceResult, ...] = tuple(unread(key, reason) for key in keys)
    return ExportCompleted(
        export_id=request.export_id,
        status=ExportStatus.FAILED,
        correlation=request.correlation,
        started_at=now,
        finished_at=now,
        destinations=tuple(
            DestinationResult(
                name=name,
                status=ExportStatus.FAILED,
                instances_sent=0,
                instances_failed=len(results),
                instances=results,
            )
            for name in request.destinations
        ),
    )
