"""pynetdicom peers over loopback for the unit tests of our layer over pynetdicom: an acceptor
of the gateway's (prompt unless asked), and requestors, for echo and CT storage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

from pynetdicom import AE

from gateway.dicom_status import VERIFICATION_SOP_CLASS
from gateway.netdicom.acceptor import ThreadedAssociationServer, start_acceptor
from gateway.netdicom.ae import GatewayAE, PromptAE

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

_AE = TypeVar("_AE", bound=AE)


@contextlib.contextmanager
def acceptor(
    handlers: list[Any], network_timeout: float = 60, ae_class: type[GatewayAE] = PromptAE
) -> Iterator[ThreadedAssociationServer]:
    """An acceptor (AE title ``ACCEPTOR``) for echo and CT storage, taking 16 KiB PDUs so that
    one data set spans many of them."""
    ae = ae_class(ae_title="ACCEPTOR")
    ae.maximum_pdu_size = 16384
    ae.network_timeout = network_timeout
    ae.add_supported_context(VERIFICATION_SOP_CLASS)
    ae.add_supported_context(CT_IMAGE_STORAGE, EXPLICIT_VR_LITTLE_ENDIAN)
    server = start_acceptor(ae, ("127.0.0.1", 0), handlers)
    try:
        yield server
    finally:
        server.shutdown()


def requestor(ae: _AE) -> _AE:
    """``ae`` (AE title ``REQUESTOR``) proposing echo and CT storage."""
    ae.ae_title = "REQUESTOR"
    ae.add_requested_context(VERIFICATION_SOP_CLASS)
    ae.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_VR_LITTLE_ENDIAN)
    return ae
