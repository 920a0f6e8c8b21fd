"""What the services call at start-up: pynetdicom's process-wide switches, the start-up check,
and the application entity of the configured mode.

The mode (``netdicom`` in the settings) decides one thing only, the class of the application
entities the services make (:func:`application_entity`); which names of pynetdicom the start-up
check requires follows from it (gateway/netdicom/compat.py). The switches are the same in every
mode, because the promises they keep are.
"""

from __future__ import annotations

from collections.abc import Callable

from pynetdicom import _config as pynetdicom_config
from pynetdicom import acse as pynetdicom_acse
from pynetdicom import dimse_messages as pynetdicom_dimse_messages
from pynetdicom import presentation as pynetdicom_presentation

from gateway.netdicom.ae import GatewayAE, PlainAE, PromptAE
from gateway.netdicom.compat import check_installed
from gateway.netdicom.connection_logs import limit_connection_logs
from gateway.netdicom.storage_contexts import storage_only
from gateway.settings import NetdicomMode

__all__ = ["application_entity", "check_installed", "configure_pynetdicom"]

_AE_CLASSES: dict[NetdicomMode, type[GatewayAE]] = {"prompt": PromptAE, "plain": PlainAE}


def configure_pynetdicom(temporary_files: Callable[..., object] | None = None) -> None:
    """Set the process-wide pynetdicom switches that the services' promises depend on.

    - Receive each data set into a file instead of memory, keeping the bytes as received
      (bytes as received, bounded memory).
    - Send each file's data set bytes as stored: no decoding, no re-encoding, no conversion.
    - Accept every storage SOP class, private and unknown ones too, in the sender's first
      proposed transfer syntax, so nothing is ever converted; and no other service but
      Verification (storage_contexts.py).
    - With ``temporary_files`` (ingest's), create the received files with it instead of
      ``NamedTemporaryFile``: on the spool's filesystem, and failing one C-STORE on a full disk
      instead of killing the association. pynetdicom offers no hook for this, so its module's
      factory is replaced.
    - Write a few of pynetdicom's log records per accepted connection, not as many as the peer
      calls up (connection_logs.py); after ``configure_logging``, whose handlers it filters.

    The receiving switches do nothing in a process that only sends, and the sending one
    nothing in a process that only receives; ``serve`` runs both.
    """
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    pynetdicom_config.UNRESTRICTED_STORAGE_SERVICE = True
    # Wrapped from the original each time, so that configuring twice wraps once.
    pynetdicom_acse.negotiate_unrestricted = storage_only(  # type: ignore[attr-defined]
        pynetdicom_presentation.negotiate_unrestricted
    )
    limit_connection_logs()
    if temporary_files is not None:
        pynetdicom_dimse_messages.NamedTemporaryFile = temporary_files  # type: ignore[attr-defined, assignment]


def application_entity(mode: NetdicomMode, ae_title: str) -> GatewayAE:
    """An AE whose associations, requested or accepted, run as ``mode`` says."""
    return _AE_CLASSES[mode](ae_title=ae_title)
