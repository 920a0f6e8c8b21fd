"""ingest's DICOM SCP: the application entity, its handlers, and the listener's start and stop.

The handlers are in :mod:`ingest.associations` (admission, release, abort) and
:mod:`ingest.receive` (C-STORE, C-ECHO); the application entity and the acceptor come from
gateway/netdicom, in the mode the settings give.
"""

from __future__ import annotations

import functools
import logging
import ssl
import time
from typing import Any

from pynetdicom import evt

from gateway.dicom_status import VERIFICATION_SOP_CLASS
from gateway.metrics import LabelledCounter
from gateway.netdicom.acceptor import ThreadedAssociationServer, start_acceptor
from gateway.netdicom.ae import GatewayAE
from gateway.netdicom.association import abort_all
from gateway.netdicom.connection_logs import handle_conn_close
from gateway.netdicom.dicom_socket import handle_conn_open
from gateway.netdicom.modes import application_entity
from gateway.netdicom.request_limits import Refusal, RequestLimit
from gateway.settings import GatewaySettings
from gateway.tls import server_context
from ingest.associations import (
    IngestContext,
    handle_aborted,
    handle_acse_recv,
    handle_rejected,
    handle_released,
    handle_requested,
    settle_ended_threads,
)
from ingest.receive import handle_echo, handle_store, take_stores_directly, watch_receiving

log = logging.getLogger(__name__)

#: pynetdicom counts TCP connections that never send an A-ASSOCIATE-RQ (port probes) against
#: its own limit until the ACSE timeout; our limit counts real associations, so pynetdicom's
#: is set higher by this headroom and only guards against floods of probes.
PROBE_HEADROOM = 1000


def build_ae(ctx: IngestContext) -> GatewayAE:
    settings = ctx.settings
    ingest = settings.ingest
    ae = application_entity(settings.netdicom, ingest.ae[0].ae_title)
    ae.implementation_class_uid = ingest.implementation_class_uid
    ae.implementation_version_name = ingest.implementation_version_name
    ae.maximum_pdu_size = ingest.max_pdu_length
    ae.maximum_associations = ingest.max_associations + PROBE_HEADROOM
    ae.network_timeout = ingest.network_timeout_seconds
    ae.require_called_aet = False  # checked by our policy, for several titles
    ae.require_calling_aet = []
    ae.request_limit = RequestLimit(
        ingest.max_associate_request_bytes,
        functools.partial(_count_refusal, ctx.metrics.associations_rejected),
    )
    # Synchronous operations only: no asynchronous operations window is negotiated.
    ae.add_supported_context(VERIFICATION_SOP_CLASS)
    return ae


def _count_refusal(rejected: LabelledCounter, refusal: Refusal) -> None:
    """A request refused before decoding counts as a rejection, under the refusal's name."""
    rejected.labels(refusal.value).inc()


def scp_handlers(ctx: IngestContext) -> list[Any]:
    """The event handlers that tie pynetdicom's associations to ingest."""
    return [
        (evt.EVT_CONN_OPEN, handle_conn_open),
        (evt.EVT_CONN_CLOSE, handle_conn_close),
        # In this order: pynetdicom calls a notification's handlers in the order bound.
        (evt.EVT_REQUESTED, handle_requested, [ctx]),
        (evt.EVT_REQUESTED, watch_receiving, [ctx]),
        (evt.EVT_REQUESTED, take_stores_directly, [ctx]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [ctx]),
        (evt.EVT_ACSE_RECV, handle_acse_recv, [ctx]),
        (evt.EVT_RELEASED, handle_released, [ctx]),
        (evt.EVT_ABORTED, handle_aborted, [ctx]),
        (evt.EVT_REJECTED, handle_rejected, [ctx]),
    ]


def listen_address(settings: GatewaySettings) -> tuple[str, int]:
    return settings.ingest.host, settings.ingest.port


def listener_tls(settings: GatewaySettings) -> ssl.SSLContext | None:
    """The listener's TLS context, if TLS is configured; raises ConfigError."""
    tls = settings.ingest.tls
    return None if tls is None else server_context(tls)


def start_scp(ctx: IngestContext) -> ThreadedAssociationServer:
    """Listen; each association runs on its own thread until the server is shut down."""
    return start_acceptor(
        build_ae(ctx),
        listen_address(ctx.settings),
        scp_handlers(ctx),
        listener_tls(ctx.settings),
    )


def stop_scp(server: ThreadedAssociationServer, ctx: IngestContext, grace_seconds: float) -> None:
    """Stop accepting, give admitted associations the grace period, then abort what is left.

    Connections that never became an association (port probes, garbage) are not waited for:
    pynetdicom keeps their threads until its ACSE timeout although nothing can come of them.
    """
    server.shutdown()
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and ctx.table.alive() > 0:
        time.sleep(0.05)
    ending = []
    for assoc in server.active_associations:
        active = ctx.table.get(assoc)
        if active is not None and active.releasing:
            # The sender may have its A-RELEASE-RP already; the release ends it at once.
            continue
        if active is not None:
            log.warning("association still open at the end of the grace period: aborting it")
        ending.append(assoc)
    abort_all(ending)
    settle_ended_threads(ctx)
