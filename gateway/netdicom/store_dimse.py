"""The DIMSE provider of prompt associations: C-STORE messages sent and taken without pynetdicom's
pydicom data sets (gateway/netdicom/store_messages.py encodes and decodes their command sets),
and a C-STORE request sent from a stored file and answered without ``send_c_store``
(:func:`send_stored`).

pynetdicom's ``send_c_store`` reads the file's meta with pydicom, builds a primitive whose
setters validate each UID, and only then sends. Export knows each instance's UIDs, transfer
syntax and data set offset from fetching it (export/file_meta.py), so :func:`send_stored`
sends the request's command set and the data set's PDUs directly, then waits for the response
as ``send_c_store`` does: 300 CT slices to ``storescp`` took 0.18-0.27 s of CPU instead of
0.33-0.48 s in a prototype (docs/performance.md). The bytes on the wire are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from gateway.netdicom.pdata_run import COMMAND_BIT, LAST_BIT, TakesRuns, file_runs, fragment_size
from gateway.netdicom.reactor_hold import HoldableCheckpoint
from gateway.netdicom.store_messages import (
    StoreRequest,
    data_set_path,
    encode,
    fragments,
    store_request_command,
    store_response_primitive,
)

log = logging.getLogger(__name__)

# Message Control Header of a fragment (PS3.8 E.2): command or data set, last or not.
DATA = 0
DATA_LAST = LAST_BIT
COMMAND = COMMAND_BIT
COMMAND_LAST = COMMAND_BIT | LAST_BIT


def file_fragments(path: tuple[Path, int], max_pdu_length: int) -> Iterator[bytes]:
    """The data set stored in ``path[0]`` from offset ``path[1]``, cut as :func:`fragments`
    cuts, read one fragment at a time."""
    file_path, offset = path
    with file_path.open("rb") as file:
        length = file.seek(0, 2) - file.seek(offset)
        size = length if max_pdu_length == 0 else fragment_size(max_pdu_length)
        remaining = length
        while True:
            piece = file.read(min(size, remaining))
            remaining -= len(piece)
            yield piece
            if remaining <= 0 or not piece:
                return


def _lone_command(primitive: P_DATA) -> tuple[int, bytes] | None:
    """(context ID, command set) of a P-DATA that holds a whole command and nothing else."""
    values = primitive.presentation_data_value_list
    if len(values) != 1:
        return None
    context_id, value = values[0]
    if len(value) < 1 or value[0] != COMMAND_LAST:
        return None
    return context_id, value[1:]


def _pdata(context_id: int, control: int, fragment: bytes) -> P_DATA:
    primitive = P_DATA()
    primitive.presentation_data_value_list.append((context_id, bytes([control]) + fragment))
    return primitive


def _log_request(message_id: object, context_id: int, sop_instance_uid: object) -> None:
    log.debug(
        "C-STORE-RQ sent: message ID %s, context %d, SOP instance %s",
        message_id,
        context_id,
        sop_instance_uid,
    )


def _log_sent(primitive: C_STORE, context_id: int) -> None:
    if primitive.MessageIDBeingRespondedTo is None:
        _log_request(primitive.MessageID, context_id, primitive.AffectedSOPInstanceUID)
    else:
        log.debug(
            "C-STORE-RSP sent: to message ID %s, context %d, status 0x%04X",
            primitive.MessageIDBeingRespondedTo,
            context_id,
            primitive.Status or 0,
        )


class StoreDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, sending C-STORE requests and responses it can encode
    directly (:func:`encode`) and taking C-STORE responses it can decode directly
    (:func:`store_response_primitive`), without building pydicom data sets; everything else
    goes through pynetdicom."""

    def receive_primitive(self, primitive: P_DATA) -> None:
        response = None if self.message is not None else _lone_command(primitive)
        decoded = None if response is None else store_response_primitive(response[1])
        if response is None or decoded is None:
            super().receive_primitive(primitive)
            return
        context_id = response[0]
        decoded._context_id = context_id
        log.debug(
            "C-STORE-RSP received: to message ID %s, context %d, status 0x%04X",
            decoded.MessageIDBeingRespondedTo,
            context_id,
            decoded.Status,
        )
        self.msg_queue.put((context_id, decoded))

    def send_msg(self, primitive: Any, context_id: int) -> None:
        command = encode(primitive)
        if command is None:
            super().send_msg(primitive, context_id)
            return
        _log_sent(primitive, context_id)
        self._send(context_id, command, data_set_path(primitive))

    def send_request(self, request: StoreRequest, data_set: tuple[Path, int]) -> None:
        """Send ``request`` with the data set stored in ``data_set`` (file, offset of the data
        set), exactly as :meth:`send_msg` sends the same request as a primitive, without one."""
        _log_request(request.message_id, request.context_id, request.sop_instance_uid)
        self._send(request.context_id, store_request_command(request), data_set)

    def _send(self, context_id: int, command: bytes, path: tuple[Path, int] | None) -> None:
        max_pdu_length = self.maximum_pdu_size
        pieces = fragments(command, max_pdu_length)
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            self.dul.send_pdu(_pdata(context_id, COMMAND_LAST if last else COMMAND, piece))
        if path is None:
            return
        if max_pdu_length and isinstance(self.dul, TakesRuns):
            for run in file_runs(context_id, *path, max_pdu_length):
                self.dul.send_pdu(run)
            return
        previous: bytes | None = None
        for piece in file_fragments(path, max_pdu_length):
            if previous is not None:
                self.dul.send_pdu(_pdata(context_id, DATA, previous))
            previous = piece
        self.dul.send_pdu(_pdata(context_id, DATA_LAST, previous or b""))


def send_stored(
    assoc: Association, request: StoreRequest, data_set: tuple[Path, int]
) -> int | None:
    """Send ``request`` with the data set stored in ``data_set`` (file, offset of the data set)
    and wait for its response, as pynetdicom's ``send_c_store`` does: its status, or None when
    no valid response came (the association is then aborted, as pynetdicom aborts it).

    Only for an association of :class:`~gateway.netdicom.ae.PromptAE` whose reactor is held
    (:func:`~gateway.netdicom.reactor_hold.requests_in_a_row`): a running reactor could take
    the response off the queue (TypeError otherwise). Raises what sending raises: RuntimeError
    when the association is not established, OSError from the file, ValueError for an offset
    outside the file or a peer's maximum PDU length with no room for a fragment. Once sending
    has begun, an error aborts the association before it is raised: a message cut short
    leaves the peer waiting for its rest.
    """
    dimse = assoc.dimse
    checkpoint = assoc._reactor_checkpoint
    if not isinstance(dimse, StoreDIMSE) or not (
        isinstance(checkpoint, HoldableCheckpoint) and checkpoint.held
    ):
        raise TypeError(f"association {assoc.name}: not a prompt association held for requests")
    if not assoc.is_established:
        raise RuntimeError(f"association {assoc.name} is not established")
    path, offset = data_set
    size = path.stat().st_size
    if not 0 <= offset <= size:
        raise ValueError(f"{path}: a data set at offset {offset} of a file of {size} bytes")
    try:
        dimse.send_request(request, data_set)
    except BaseException:
        # Part of the message may be on its way: the association cannot carry another.
        assoc.abort()
        raise
    _, response = dimse.get_msg(block=True)
    if response is None:
        assoc._handle_no_response()  # pynetdicom's own: logs why, aborts if still open
        return None
    if (
        not isinstance(response, C_STORE)
        or not response.is_valid_response
        or response.Status is None
    ):
        log.error(
            "association %s: no valid C-STORE response to message %d; aborting",
            assoc.name,
            request.message_id,
        )
        assoc.abort()
        return None
    return int(response.Status)
