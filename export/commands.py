"""Operator commands: ``echo`` a destination, ``send`` an export request (and wait for it).

What the command line gives is checked here, before anything is sent: a destination that is not
configured, or an id or object key that is not one, is a :class:`UsageError` naming the value.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from pydantic import ValidationError

from contracts.cloudevent import CONTENT_TYPE_STRUCTURED, export_requested_event, to_structured
from contracts.export import ExportCompleted, ExportRequested, ExportStatus
from contracts.routing import EXPORT_REQUESTED_ROUTING_KEY
from export.app import scu_identity
from export.request_watch import Intake, RequestWatch, open_watch
from export.scu import echo
from gateway.backends import open_publisher
from gateway.bus import open_event_log
from gateway.errors import EventUnroutable, GatewayError, UsageError
from gateway.settings import DestinationSettings, ExportSettings, GatewaySettings

T = TypeVar("T")

#: How often ``send --wait`` looks where its request stands, the first time after this long:
#: a request an export service takes is usually done by then.
INTAKE_LOOK_SECONDS = 5.0
#: After this long with an export service working on the request and no completion, ``send
#: --wait`` C-ECHOes the destination once to tell a slow export from a destination that is down
#: (export's first retry comes after its first backoff, 5 s by default).
ECHO_AFTER_SECONDS = 10.0
#: How the command line names the request's fields in its messages.
_ARGUMENTS = {
    "association_id": "--association",
    "object_keys": "object key",
    "destinations": "--to",
}


def known_destination(settings: GatewaySettings, name: str) -> DestinationSettings:
    destination = settings.export.destination(name)
    if destination is None:
        known = ", ".join(d.name for d in settings.export.destinations) or "none configured"
        raise UsageError(f"unknown destination {name!r} (known: {known})")
    return destination


def echo_destination(settings: GatewaySettings, name: str) -> str | None:
    """C-ECHO a configured destination; None on success, else the reason."""
    return echo(scu_identity(settings), settings.export, known_destination(settings, name))


def build_request(
    settings: GatewaySettings,
    destination: str,
    association_id: str | None,
    object_keys: tuple[str, ...],
    reply_routing_key: str | None,
) -> ExportRequested:
    """The request the command line asks for; :class:`UsageError` naming what is wrong."""
    known_destination(settings, destination)
    if bool(object_keys) == bool(association_id):
        raise UsageError("give either --association ID or one or more object keys")
    try:
        return ExportRequested(
            export_id=f"cli-{uuid.uuid4()}",
            destinations=(destination,),
            association_id=association_id,
            object_keys=object_keys or None,
            reply_routing_key=reply_routing_key,
            correlation={"requested_by": "dicom-gateway send"},
        )
    except ValidationError as exc:
        raise UsageError(argument_problems(exc)) from exc


def argument_problems(exc: ValidationError) -> str:
    """What pydantic found wrong with a request, in the command line's names, on one line."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{_ARGUMENTS.get(field, field or 'request')}: {message}")
    return "; ".join(problems)


class Progress(Protocol):
    """What ``send --wait`` is told while it waits."""

    def __call__(self, elapsed: float) -> None:
        """About once a second, with the seconds waited so far."""

    def note(self, text: str) -> None:
        """Where the request stands, each time that changes."""


def retry_policy(export: ExportSettings) -> str:
    """How export retries a destination, in words (``3 times, after 5, 30 and 120 s``)."""
    if export.retries == 0:
        return "does not retry it"
    delays = [f"{export.backoff(n):g}" for n in range(1, export.retries + 1)]
    listed = delays[0] if len(delays) == 1 else f"{', '.join(delays[:-1])} and {delays[-1]}"
    return f"retries it {export.retries} time{'s' if export.retries > 1 else ''}, after {listed} s"


def waiting_note(
    intake: Intake, echo_problem: str | None, destination: str, export: ExportSettings
) -> str:
    """What ``send --wait`` says of where its request stands (the C-ECHO's problem, if it
    ran and failed, while an export service has the request)."""
    if intake is Intake.NOT_TAKEN:
        return (
            "no export service has taken the request yet: is `dicom-gateway serve` or "
            "`dicom-gateway export` running with this configuration (and not busy with others)?"
        )
    if intake is Intake.QUEUED:
        return "the request waits behind others for the export service"
    if intake is Intake.PUT_BACK:
        return (
            "the export service put the request back to try again later "
            "(object storage or its ledger failed; its log says which)"
        )
    if intake is Intake.REJECTED:
        return "the export service rejected the request as invalid (its log says why)"
    if echo_problem is not None:
        return (
            f"C-ECHO to {destination} from here failed ({echo_problem}); export "
            f"{retry_policy(export)}, before it reports the failure"
        )
    return "an export service is working on the request"


async def send_request(
    settings: GatewaySettings,
    request: ExportRequested,
    wait_seconds: float | None,
    progress: Progress,
) -> ExportCompleted | None:
    """Publish ``request``; with ``wait_seconds``, wait for and return its completion."""
    event = export_requested_event(
        request, source="dicom-gateway://cli/send", time=datetime.now(UTC)
    )
    body = to_structured(event)
    watch = None if wait_seconds is None else await open_watch(settings, request)
    try:
        await _publish(settings, request.export_id, body)
        if watch is None or wait_seconds is None:
            return None
        return await _wait(settings, request, watch, wait_seconds, progress)
    finally:
        if watch is not None:
            await watch.close()


async def _publish(settings: GatewaySettings, export_id: str, body: bytes) -> None:
    event_log = None
    if settings.broker.embedded:
        event_log = await asyncio.to_thread(open_event_log, settings.broker)
    publisher = open_publisher(settings.broker, "dicom-gateway send", event_log)
    try:
        await publisher.publish(
            EXPORT_REQUESTED_ROUTING_KEY,
            body,
            message_id=export_id,
            content_type=CONTENT_TYPE_STRUCTURED,
        )
    except EventUnroutable as exc:
        raise GatewayError(
            f"RabbitMQ has no queue for export requests on exchange {settings.broker.exchange}: "
            "no export service has started against it yet (export and serve declare theirs)"
        ) from exc
    finally:
        await publisher.close()
        if event_log is not None:
            await asyncio.to_thread(event_log.close)


async def _wait(
    settings: GatewaySettings,
    request: ExportRequested,
    watch: RequestWatch,
    wait_seconds: float,
    progress: Progress,
) -> ExportCompleted:
    (destination,) = request.destinations
    started = time.monotonic()
    look_at = INTAKE_LOOK_SECONDS
    echoed = False
    echo_problem = None  # kept: what the one C-ECHO found stays news while the request is out
    said = None
    while (elapsed := time.monotonic() - started) < wait_seconds:
        completed = await watch.completion(min(1.0, wait_seconds - elapsed))
        if completed is not None:
            return completed
        elapsed = time.monotonic() - started
        progress(elapsed)
        if elapsed < look_at:
            continue
        look_at = elapsed + INTAKE_LOOK_SECONDS
        intake = await watch.intake()
        if intake is Intake.TAKEN and not echoed and elapsed >= ECHO_AFTER_SECONDS:
            echoed = True
            echo_problem = await _on_daemon_thread(lambda: echo_destination(settings, destination))
        note = waiting_note(intake, echo_problem, destination, settings.export)
        if note != said:
            progress.note(note)
            said = note
    raise GatewayError(f"no completion for {request.export_id} within {wait_seconds:g} s")


async def _on_daemon_thread(function: Callable[[], T]) -> T:
    """``function()`` on a daemon thread of its own. asyncio's default executor would hold
    up the end of ``asyncio.run`` (and so a Ctrl-C) until it returned, and a C-ECHO to a host
    that does not answer can take minutes."""
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(function())
        except Exception as exc:  # noqa: BLE001 (not handled here: the awaiting coroutine raises it)
            done.set_exception(exc)

    threading.Thread(target=run, name="send-echo", daemon=True).start()
    return await asyncio.wrap_future(done)


def summary(completed: ExportCompleted) -> str:
    """The completion as ``send --wait`` prints it: the export's status, a line per
    destination, and a line per instance that was not sent, with why."""
    lines = [f"export {completed.export_id}: {completed.status}"]
    for destination in completed.destinations:
        lines.append(
            f"  {destination.name}: {destination.status}, sent {destination.instances_sent}, "
            f"failed {destination.instances_failed}"
        )
        lines += [
            f"    {i.object_key}: {i.status}" + (f" ({i.error})" if i.error else "")
            for i in destination.instances
            if i.error
        ]
    return "\n".join(lines)


def succeeded(completed: ExportCompleted) -> bool:
    return completed.status is ExportStatus.SUCCEEDED
