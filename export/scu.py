"""The Storage SCU: one association per batch, each instance sent with its stored bytes.

Blocking (pynetdicom); the exporter runs it in a worker thread. The instances come from a
source that is still fetching them, so the association is open while the downloads go on;
each file is handed back to the source once sent. The file is streamed
(gateway/netdicom/modes.py) so that the data set is neither decoded nor held in memory, the
outgoing queue is bounded (gateway/netdicom/backpressure.py), and only a presentation context
with exactly the stored transfer syntax is ever used.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pynetdicom import evt
from pynetdicom.association import Association

from contracts.export import InstanceOutcome, InstanceResult
from export.plan import (
    Context,
    InstanceMeta,
    NotFetched,
    OutgoingInstance,
    describe_rejection,
    failure,
    rejection_is_transient,
)
from gateway.dicom_status import VERIFICATION_SOP_CLASS, Status, stored
from gateway.errors import ConfigError
from gateway.netdicom import backpressure
from gateway.netdicom.ae import GatewayAE
from gateway.netdicom.association import has_ended, was_aborted
from gateway.netdicom.connect_failures import connect_failure, keep_connect_failures
from gateway.netdicom.dicom_socket import handle_conn_open
from gateway.netdicom.modes import application_entity
from gateway.netdicom.store_dimse import send_stored
from gateway.netdicom.store_messages import StoreRequest
from gateway.settings import DestinationSettings, ExportSettings, NetdicomMode
from gateway.tls import client_context

log = logging.getLogger(__name__)

#: Message IDs are an unsigned 16-bit field (PS3.7 E.1).
MAX_MESSAGE_ID = 0xFFFF
#: The requests' priority (PS3.7 9.3.1.1: 2 is LOW): pynetdicom's default for send_c_store,
#: kept so that both ways of sending put the same bytes on the wire.
PRIORITY = 2


class InstanceSource(Protocol):
    """Where a batch's instances come from, in order (:class:`export.fetch.FetchStream`)."""

    def take(self) -> OutgoingInstance | InstanceResult | NotFetched | None:
        """The next instance, the result of an object that cannot be read, or an object not
        fetched this time; None at the end."""

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
    #: Keys worth another attempt, each with why it was not sent this time.
    retry: dict[str, str] = field(default_factory=dict)
    #: Keys whose context was not proposed: for another association of the same attempt.
    deferred: list[str] = field(default_factory=list)
    #: Why the association failed or ended early (for the log); None when it did not.
    error: str | None = None
    #: A permanent association rejection: retrying cannot help.
    permanent: bool = False
    #: No association was established (not reachable, rejected, misconfigured).
    no_association: bool = False

    def retry_all(self, keys: list[str], why: str) -> None:
        """``keys`` are to be tried again, all for the same reason, which is the batch's."""
        self.retry.update(dict.fromkeys(keys, why))
        self.error = why


@dataclass(frozen=True)
class ScuIdentity:
    ae_title: str
    implementation_class_uid: str
    implementation_version_name: str
    #: How its associations run pynetdicom (``netdicom`` in the settings).
    mode: NetdicomMode


def _application_entity(identity: ScuIdentity, settings: ExportSettings) -> GatewayAE:
    keep_connect_failures()  # the reason goes into our report, not pynetdicom's log lines
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


def _not_accepted(instance: InstanceMeta) -> InstanceResult:
    return failure(
        instance,
        f"destination does not accept SOP class {instance.sop_class_uid} "
        f"in transfer syntax {instance.transfer_syntax_uid} (sent as stored, never converted)",
    )


def _accepted_no_context(assoc: Association) -> bool:
    """The destination answered the association request but accepted none of its contexts
    (pynetdicom then aborts it): a refusal of these contexts, not an outage."""
    return not assoc.is_rejected and bool(assoc.rejected_contexts) and not assoc.accepted_contexts


def _association_failure(assoc: Association) -> tuple[str, bool]:
    """(reason, permanent) for an association that was not established."""
    primitive = assoc.acceptor.primitive
    if assoc.is_rejected and primitive is not None:
        result = int(primitive.result or 0)
        source = int(primitive.result_source or 0)
        reason = int(primitive.diagnostic or 0)
        return describe_rejection(result, source, reason), not rejection_is_transient(result)
    cause = connect_failure(assoc)
    if cause is not None:
        return f"destination not reachable ({cause})", False
    return "destination not reachable or aborted the association", False


def send_batch(
    identity: ScuIdentity,
    settings: ExportSettings,
    destination: DestinationSettings,
    proposed: Sequence[Context],
    source: InstanceSource,
    *,
    alone: bool = False,
) -> BatchOutcome:
    """Propose ``proposed`` and send what ``source`` hands out over one association, as it
    comes; never raises for DICOM-level problems (a storage outage propagates, the association
    released). An instance of a context not proposed is deferred, not sent, and so is one of
    odd length unless it is ``alone`` in its batch (see ``InstanceMeta.odd_length``)."""
    ae = _application_entity(identity, settings)
    for sop_class, transfer_syntax in proposed:
        ae.add_requested_context(sop_class, [transfer_syntax])
    outcome = BatchOutcome(no_association=True)
    try:
        assoc = _associate(ae, destination, [(evt.EVT_CONN_OPEN, handle_conn_open)])
    except ConfigError as exc:  # retrying cannot mend a configuration
        outcome.retry_all(source.untaken(), str(exc))
        outcome.permanent = True
        return outcome
    except (OSError, RuntimeError) as exc:
        outcome.retry_all(source.untaken(), f"cannot connect: {exc}")
        return outcome
    if not assoc.is_established and _accepted_no_context(assoc):
        outcome.no_association = False
        _refuse_all(set(proposed), source, outcome)
        return outcome
    if not assoc.is_established:
        why, outcome.permanent = _association_failure(assoc)
        outcome.retry_all(source.untaken(), why)
        return outcome
    try:
        backpressure.install(assoc)
    except backpressure.NotBounded as exc:
        log.error(
            "association to %s: outgoing queue not bounded, aborting: %s", destination.name, exc
        )
        assoc.abort()
        outcome.retry_all(source.untaken(), f"outgoing queue not bounded: {exc}")
        return outcome
    outcome.no_association = False
    try:
        accepted: dict[Context, int] = {}
        for cx in assoc.accepted_contexts:
            if cx.context_id is not None:  # every accepted context has one
                pair = (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                accepted.setdefault(pair, cx.context_id)
        with ae.requests_in_a_row(assoc):
            sender = _Sender(assoc, accepted, direct=identity.mode == "prompt")
            _send_all(assoc, set(proposed), sender, source, outcome, alone=alone)
    finally:
        if assoc.is_established:
            # The reactor, held until now, may not have seen the peer's abort yet; an abort
            # also stops this association's threads.
            if has_ended(assoc):
                assoc.abort()
            else:
                assoc.release()
    return outcome


def _sendable(
    item: OutgoingInstance | InstanceResult | NotFetched, outcome: BatchOutcome
) -> OutgoingInstance | None:
    """``item`` if it has a file to send; else it is recorded: its final result (it cannot be
    read), or another attempt (it could not be fetched this time)."""
    if isinstance(item, InstanceResult):
        outcome.unreadable.append(item)
        return None
    if isinstance(item, NotFetched):
        outcome.retry[item.object_key] = outcome.error = item.reason
        return None
    return item


def _refuse_all(proposed: set[Context], source: InstanceSource, outcome: BatchOutcome) -> None:
    """No context was accepted: each instance of a proposed context fails, naming its own."""
    while (item := source.take()) is not None:
        instance = _sendable(item, outcome)
        if instance is None:
            continue
        source.release(instance)
        if instance.context in proposed:
            outcome.results.append(_not_accepted(instance))
        else:
            outcome.deferred.append(instance.object_key)


class _Sender:
    """Sends one instance at a time over an association whose reactor is held."""

    def __init__(self, assoc: Association, accepted: dict[Context, int], *, direct: bool) -> None:
        self._assoc = assoc
        #: (SOP class, transfer syntax) -> the ID of an accepted context with exactly those
        self.accepted = accepted
        #: Send without pynetdicom's ``send_c_store`` (prompt mode: gateway/netdicom/store_dimse.py)
        self._direct = direct
        # Message IDs are unique among an association's requests (PS3.7 9.3.1.1): 1, 2, ...
        # wrapping after 65535, long after the earliest request was answered.
        self._message_ids = itertools.cycle(range(1, MAX_MESSAGE_ID + 1))

    def status(self, instance: OutgoingInstance) -> int | None:
        """The destination's status for ``instance`` (accepted in its context), None when no
        response came. Raises what sending raises (see _send_one)."""
        message_id = next(self._message_ids)
        if self._direct:
            request = StoreRequest(
                context_id=self.accepted[instance.context],
                message_id=message_id,
                sop_class_uid=instance.sop_class_uid,
                sop_instance_uid=instance.sop_instance_uid,
                priority=PRIORITY,
            )
            return send_stored(self._assoc, request, (instance.path, instance.data_set_offset))
        response = self._assoc.send_c_store(instance.path, msg_id=message_id, priority=PRIORITY)
        status = response.get("Status")
        return None if status is None else int(status)


def _send_all(
    assoc: Association,
    proposed: set[Context],
    sender: _Sender,
    source: InstanceSource,
    outcome: BatchOutcome,
    *,
    alone: bool,
) -> None:
    while not has_ended(assoc):
        taken = source.take()
        if taken is None:
            return
        item = _sendable(taken, outcome)
        if item is None:
            continue
        try:
            if item.context not in proposed or (item.odd_length and not alone):
                outcome.deferred.append(item.object_key)
                continue
            result = _send_one(sender, item)
        finally:
            source.release(item)
        if result is None and item.odd_length:
            # Alone in its association, so it is this data set the destination would not take:
            # the same bytes would meet the same end on every attempt.
            outcome.results.append(
                failure(
                    item,
                    f"no C-STORE response: the destination ended the association on this data "
                    f"set of odd length ({item.data_set_length} bytes; PS3.5 7.1.1 requires "
                    f"even lengths, and it is sent as stored, never padded)",
                )
            )
        elif result is None:
            # No status: the destination may or may not have it. Sending it again is
            # harmless (same SOP Instance UID), reporting it as sent would not be.
            outcome.retry[item.object_key] = "no C-STORE response from the destination"
            outcome.error = "no C-STORE response from the destination"
        else:
            outcome.results.append(result)
    rest = source.untaken()
    if rest:
        ended = "the destination aborted" if was_aborted(assoc) else "the association ended"
        why = f"{ended} before this instance's turn"
        outcome.retry.update(dict.fromkeys(rest, why))
        outcome.error = outcome.error or why


def _send_one(sender: _Sender, instance: OutgoingInstance) -> InstanceResult | None:
    """The instance's final result, or None when no response came (worth another try)."""
    if instance.context not in sender.accepted:
        return _not_accepted(instance)
    try:
        status = sender.status(instance)
    except (ValueError, AttributeError, OSError) as exc:
        # What cannot be sent as stored (no matching context, unreadable file meta, a file
        # gone, a peer's maximum PDU with no room for data) fails this instance, not the
        # association.
        return failure(instance, f"cannot send as stored: {exc}")
    if status is None:
        # No response came (DIMSE timeout, abort): pynetdicom's empty data set, or send_stored.
        return None
    if stored(status):
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
