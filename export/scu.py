"""The Storage SCU: one association per batch, each instance sent with its stored bytes.

Blocking (pynetdicom); the exporter runs it in a worker thread. The instances come from a
source that is still fetching them, so the association is open while the downloads go on;
each file is handed back to the source once sent. The file is streamed
(gateway/netdicom/modes.py) so that the data set is neither decoded nor held in memory, the
outgoing queue is bounded (gateway/netdicom/backpressure.py), and only a presentation context
with exactly the stored transfer syntax is ever used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pynetdicom import evt
from pynetdicom.association import Association

from contracts.export import InstanceOutcome, InstanceResult
from export.plan import (
    Context,
    OutgoingInstance,
    describe_rejection,
    failure,
    rejection_is_transient,
)
from gateway.dicom_status import STORED_WITH_WARNING, VERIFICATION_SOP_CLASS, Status
from gateway.errors import ConfigError
from gateway.netdicom import backpressure
from gateway.netdicom.ae import GatewayAE
from gateway.netdicom.association import has_ended
from gateway.netdicom.dicom_socket import handle_conn_open
from gateway.netdicom.modes import application_entity
from gateway.settings import DestinationSettings, ExportSettings, NetdicomMode
from gateway.tls import client_context

log = logging.getLogger(__name__)


class InstanceSource(Protocol):
    """Where a batch's instances come from, in order (:class:`export.fetch.FetchStream`)."""

    def take(self) -> OutgoingInstance | InstanceResult | None:
        """The next instance, or the result of an object that cannot be read; None at the
        end."""

    def release(self, instance: OutgoingInstance) -> None:
        """Done with ``instance`` (its file may go)."""

    def untaken(self) -> list[str]:
        """The keys of the instances not taken yet."""


@dataclass
class BatchOutcome:
    """What happened to one batch: final results, and what may be tried again."""

    results: list[InstanceResult] = field(default_factory=list)
    #: Objects that could not be read: the same result at every destination.
    unreadable: list[InstanceResult] = field(default_factory=list)
    #: Keys worth another attempt.
    retry: list[str] = field(default_factory=list)
    #: Keys whose context was not proposed: for another association of the same attempt.
    deferred: list[str] = field(default_factory=list)
    #: Why ``retry`` is not empty, or why the association failed.
    error: str | None = None
    #: A permanent association rejection: retrying cannot help.
    permanent: bool = False
    #: No association was established (not reachable, rejected, misconfigured).
    no_association: bool = False


@dataclass(frozen=True)
class ScuIdentity:
    ae_title: str
    implementation_class_uid: str
    implementation_version_name: str
    #: How its associations run pynetdicom (``netdicom`` in the settings).
    mode: NetdicomMode


def _application_entity(identity: ScuIdentity, settings: ExportSettings) -> GatewayAE:
    ae = application_entity(identity.mode, identity.ae_title)
    ae.implementation_class_uid = identity.implementation_class_uid
    ae.implementation_version_name = identity.implementation_version_name
    ae.maximum_pdu_size = settings.max_pdu_length
    ae.network_timeout = settings.network_timeout_seconds
    ae.dimse_timeout = settings.dimse_timeout_seconds
    ae.acse_timeout = settings.network_timeout_seconds
    return ae


def _associate(ae: GatewayAE, destination: DestinationSettings, handlers: list[Any]) -> Association:
    """Raises ConfigError when the destination's TLS files cannot be loaded."""
    tls = destination.tls
    return ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        evt_handlers=handlers,
        tls_args=None
        if tls is None
        else (client_context(tls, destination.name), tls.server_name or destination.host),
    )


def _association_failure(assoc: Association) -> tuple[str, bool]:
    """(reason, permanent) for an association that was not established."""
    primitive = assoc.acceptor.primitive
    if assoc.is_rejected and primitive is not None:
        result = int(primitive.result or 0)
        source = int(primitive.result_source or 0)
        reason = int(primitive.diagnostic or 0)
        return describe_rejection(result, source, reason), not rejection_is_transient(result)
    return "destination not reachable or aborted the association", False


def send_batch(
    identity: ScuIdentity,
    settings: ExportSettings,
    destination: DestinationSettings,
    proposed: Sequence[Context],
    source: InstanceSource,
) -> BatchOutcome:
    """Propose ``proposed`` and send what ``source`` hands out over one association, as it
    comes; never raises for DICOM-level problems (a storage outage propagates, the association
    released). An instance of a context not proposed is deferred, not sent."""
    ae = _application_entity(identity, settings)
    for sop_class, transfer_syntax in proposed:
        ae.add_requested_context(sop_class, [transfer_syntax])
    outcome = BatchOutcome(no_association=True)
    try:
        assoc = _associate(ae, destination, [(evt.EVT_CONN_OPEN, handle_conn_open)])
    except ConfigError as exc:  # retrying cannot mend a configuration
        outcome.retry, outcome.error, outcome.permanent = source.untaken(), str(exc), True
        return outcome
    except (OSError, RuntimeError) as exc:
        outcome.retry = source.untaken()
        outcome.error = f"cannot connect: {exc}"
        return outcome
    if not assoc.is_established:
        outcome.error, outcome.permanent = _association_failure(assoc)
        outcome.retry = source.untaken()
        return outcome
    try:
        backpressure.install(assoc)
    except backpressure.NotBounded as exc:
        log.error(
            "association to %s: outgoing queue not bounded, aborting: %s", destination.name, exc
        )
        assoc.abort()
        outcome.error, outcome.retry = f"outgoing queue not bounded: {exc}", source.untaken()
        return outcome
    outcome.no_association = False
    try:
        accepted = {
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
        }
        with ae.requests_in_a_row(assoc):
            _send_all(assoc, set(proposed), accepted, source, outcome)
    finally:
        if assoc.is_established:
            # The reactor, held until now, may not have seen the peer's abort yet; an abort
            # also stops this association's threads.
            if has_ended(assoc):
                assoc.abort()
            else:
                assoc.release()
    return outcome


def _send_all(
    assoc: Association,
    proposed: set[Context],
    accepted: set[Context],
    source: InstanceSource,
    outcome: BatchOutcome,
) -> None:
    while not has_ended(assoc):
        item = source.take()
        if item is None:
            return
        if isinstance(item, InstanceResult):
            outcome.unreadable.append(item)
            continue
        try:
            if item.context not in proposed:
                outcome.deferred.append(item.object_key)
                continue
            result = _send_one(assoc, item, accepted)
        finally:
            source.release(item)
        if result is None:
            # No status: the destination may or may not have it. Sending it again is
            # harmless (same SOP Instance UID), reporting it as sent would not be.
            outcome.retry.append(item.object_key)
            outcome.error = "no C-STORE response from the destination"
        else:
            outcome.results.append(result)
    rest = source.untaken()
    if rest:
        outcome.retry += rest
        outcome.error = outcome.error or "association ended before every instance was sent"


def _send_one(
    assoc: Association, instance: OutgoingInstance, accepted: set[tuple[str, str]]
) -> InstanceResult | None:
    """The instance's final result, or None when no response came (worth another try)."""
    if instance.context not in accepted:
        return failure(
            instance,
            f"destination does not accept SOP class {instance.sop_class_uid} "
            f"in transfer syntax {instance.transfer_syntax_uid} (sent as stored, never converted)",
        )
    try:
        response = assoc.send_c_store(instance.path)
    except (ValueError, AttributeError, OSError) as exc:
        # pynetdicom refuses what it cannot send as stored (no matching context, unreadable
        # file meta); that fails this instance, not the association.
        return failure(instance, f"cannot send as stored: {exc}")
    status = response.get("Status")
    if status is None:
        # pynetdicom returns an empty data set when no response came (DIMSE timeout, abort).
        return None
    status = int(status)
    if status == Status.SUCCESS or status in STORED_WITH_WARNING:
        return InstanceResult(
            object_key=instance.object_key,
            sop_instance_uid=instance.sop_instance_uid,
            status=InstanceOutcome.SENT,
            dicom_status=status,
            error=None,
        )
    return failure(instance, f"destination answered 0x{status:04X}", status)


def echo(
    identity: ScuIdentity, settings: ExportSettings, destination: DestinationSettings
) -> str | None:
    """C-ECHO the destination; None on success, else why it failed."""
    ae = _application_entity(identity, settings)
    ae.add_requested_context(VERIFICATION_SOP_CLASS)
    try:
        assoc = _associate(ae, destination, [(evt.EVT_CONN_OPEN, handle_conn_open)])
    except ConfigError as exc:
        return str(exc)
    except (OSError, RuntimeError) as exc:
        return f"cannot connect: {exc}"
    if not assoc.is_established:
        return _association_failure(assoc)[0]
    try:
        response = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    status = response.get("Status")
    if status is None:
        return "no C-ECHO response"
    if int(status) != Status.SUCCESS:
        return f"C-ECHO answered 0x{int(status):04X}"
    return None
