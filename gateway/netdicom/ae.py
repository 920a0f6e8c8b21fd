"""The application entities the services make: one per mode, each giving its associations the
providers of that mode.

:class:`PromptAE` gives every association it requests or accepts the prompt DUL and socket
(gateway/netdicom/prompt_dul.py, prompt_socket.py) and C-STORE messages encoded directly
(store_messages.py); accepted ones wait on their DIMSE queue (prompt_dimse.py), requested ones
get a reactor checkpoint that can be held across a batch (reactor_hold.py). :class:`PlainAE`
leaves every association to pynetdicom. Both record the association a request handler makes,
for the server of handed-over connections (gateway/netdicom/handover.py).

pynetdicom makes an acceptor's association in its request handler and a requestor's in
``AE.associate``, then asks ``AE._create_socket`` for its socket; nothing has run at either
point, so that is where the providers are replaced. Nothing in pynetdicom is patched.
"""

from __future__ import annotations

import contextlib
import ssl
from contextlib import AbstractContextManager
from typing import ClassVar

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket, RequestHandler

from gateway.netdicom.prompt_dimse import PromptDIMSE
from gateway.netdicom.prompt_dul import PromptDUL
from gateway.netdicom.prompt_socket import PromptSocket
from gateway.netdicom.reactor_hold import HoldableCheckpoint, requests_in_a_row
from gateway.netdicom.request_limits import RequestLimit
from gateway.netdicom.store_dimse import StoreDIMSE


class RecordingRequestHandler(RequestHandler):
    """pynetdicom's request handler, keeping the association it makes."""

    association: Association | None = None

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        self.association = assoc
        return assoc


def _reset_timers(assoc: Association) -> None:
    """The association set its timers on the DUL it made first; set them on the new one."""
    assoc.acse_timeout = assoc.acse_timeout
    assoc.network_timeout = assoc.network_timeout


def make_prompt(assoc: Association, request_limit: RequestLimit | None = None) -> None:
    """Give a not yet started acceptor association the prompt DUL, DIMSE and socket, the DUL
    refusing a first PDU that ``request_limit`` does not take.

    pynetdicom's request handler made the association with its own providers; they have
    not run yet, so they are replaced, and the connection is wrapped again so that its
    "transport connection indication" (Evt5) reaches the new DUL's event queue.
    """
    connection = None if assoc.dul.socket is None else assoc.dul.socket.socket
    if connection is None:
        raise ValueError(f"association {assoc.name} has no accepted connection to make prompt")
    dul = PromptDUL(assoc)
    dul.request_limit = request_limit
    dimse = PromptDIMSE(assoc)
    dul.wake_user = dimse.wake
    assoc.dul, assoc.dimse = dul, dimse
    dul.socket = PromptSocket(assoc, client_socket=connection)
    _reset_timers(assoc)


class PromptRequestHandler(RecordingRequestHandler):
    """A request handler that applies :func:`make_prompt` to each association."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        ae = self.ae
        make_prompt(assoc, ae.request_limit if isinstance(ae, GatewayAE) else None)
        return assoc


class GatewayAE(AE):
    """An AE of the gateway: what its associations run on is decided by its class."""

    #: What the AE's acceptors make each accepted association with.
    request_handler: ClassVar[type[RecordingRequestHandler]] = RecordingRequestHandler
    #: What its acceptors refuse to decode as a connection's first PDU (request_limits.py);
    #: None: anything. Only the prompt providers apply it; plain mode decodes every request.
    request_limit: RequestLimit | None = None

    def requests_in_a_row(self, assoc: Association) -> AbstractContextManager[None]:
        """A block in which ``assoc`` (requested by this AE) sends a batch of requests."""
        return contextlib.nullcontext()


class PlainAE(GatewayAE):
    """pynetdicom's AE: every association on pynetdicom's own providers."""


class PromptAE(GatewayAE):
    """An AE whose associations get the prompt providers (see the module docstring)."""

    request_handler = PromptRequestHandler

    def requests_in_a_row(self, assoc: Association) -> AbstractContextManager[None]:
        """The reactor held paused for the block (gateway/netdicom/reactor_hold.py)."""
        return requests_in_a_row(assoc)

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[ssl.SSLContext, str] | None,
    ) -> AssociationSocket:
        assoc.dul = PromptDUL(assoc)
        assoc.dimse = StoreDIMSE(assoc)
        assoc._reactor_checkpoint = HoldableCheckpoint(reactor=assoc)
        _reset_timers(assoc)
        sock = PromptSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock
