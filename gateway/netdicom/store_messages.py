"""C-STORE command sets encoded directly, the way pynetdicom encodes them; a C-STORE-RQ's
command set decoded directly for the fast path (:func:`store_request`), and a C-STORE-RSP's for
export (:func:`store_response_primitive`). The DIMSE provider that sends and takes them is
gateway/netdicom/store_dimse.py.

pynetdicom turns every DIMSE primitive into a pydicom data set (one attribute at a time) and
encodes it twice, the first time only to learn its group length: a large part of the time
one instance takes, for each C-STORE-RSP that ingest sends and each C-STORE-RQ that export
sends (docs/performance.md). A C-STORE command set is a handful of fixed elements, so here it
is written with ``struct``, in the same order and padding; a unit test compares the bytes with
pynetdicom's for every combination. Anything else (other messages, a C-STORE response with an
error comment or an offending element, a request on behalf of a C-MOVE, a data set in memory)
returns None and is left to pynetdicom.

What is encoded (or decoded) here is always encoded here, whatever is logged or listening:
turning on debug logging must not change the code being debugged. So pynetdicom's
``EVT_DIMSE_SENT`` and ``EVT_DIMSE_RECV`` are not triggered for these messages (there is no
pynetdicom message object to give them; its own handlers only log, and nothing of ours
listens), and each message is logged here at DEBUG instead of by pynetdicom at INFO.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from pynetdicom.dimse_primitives import C_STORE

from gateway.netdicom.pdata_run import COMMAND_BIT, LAST_BIT, fragment_size, pdu_header

log = logging.getLogger(__name__)

C_STORE_RQ_FIELD = 0x0001
C_STORE_RSP_FIELD = 0x8001
#: Command Data Set Type (PS3.7 E.1): any value but this one means a data set follows.
NO_DATA_SET = 0x0101
DATA_SET_PRESENT = 0x0001

# Command elements (group 0000) in tag order, as pydicom writes a data set.
_COMMAND_GROUP_LENGTH = 0x0000
_AFFECTED_SOP_CLASS_UID = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
_PRIORITY = 0x0700
_COMMAND_DATA_SET_TYPE = 0x0800
_STATUS = 0x0900
_AFFECTED_SOP_INSTANCE_UID = 0x1000

# Implicit VR little endian: group, element, value length.
_ELEMENT_HEADER = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UL = struct.Struct("<I")
#: The elements of a C-STORE-RQ that :func:`store_request` decodes (PS3.7 9.3.1.1).
_US_ELEMENTS = frozenset({_COMMAND_FIELD, _MESSAGE_ID, _PRIORITY, _COMMAND_DATA_SET_TYPE})
_UI_ELEMENTS = frozenset({_AFFECTED_SOP_CLASS_UID, _AFFECTED_SOP_INSTANCE_UID})
_REQUIRED = _US_ELEMENTS | _UI_ELEMENTS
#: The elements of a C-STORE-RSP that :func:`store_response_primitive` decodes: its UIDs
#: are optional (PS3.7 9.3.1.2), an error comment or offending element is left to pynetdicom.
_RESPONSE_REQUIRED = frozenset(
    {_COMMAND_FIELD, _MESSAGE_ID_BEING_RESPONDED_TO, _COMMAND_DATA_SET_TYPE, _STATUS}
)
_RESPONSE_ELEMENTS = _RESPONSE_REQUIRED | _UI_ELEMENTS
_US_FIELDS = _US_ELEMENTS | _RESPONSE_REQUIRED
#: A UID is at most 64 characters (PS3.5 9.1), 64 bytes padded.
_MAX_UID_BYTES = 64


def _us(element: int, value: int) -> bytes:
    return _ELEMENT_HEADER.pack(0, element, 2) + _US.pack(value)


def _ui(element: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    if len(value) % 2:
        value += b"\0"  # UIDs are padded with a NUL to an even length
    return _ELEMENT_HEADER.pack(0, element, len(value)) + value


def data_set_path(primitive: C_STORE) -> tuple[Path, int] | None:
    """Where a request's data set is to be read from (file, offset of the data set), if from a
    file."""
    path = primitive._dataset_path
    return path if isinstance(path, tuple) else None


def encode(primitive: object) -> bytes | None:
    """The command set of a C-STORE request read from a file, or of a C-STORE response without
    an error comment or offending element, exactly as pynetdicom would encode it; else None."""
    if type(primitive) is not C_STORE:
        return None
    if primitive.MessageIDBeingRespondedTo is None:
        elements = _request(primitive)
    else:
        elements = _response(primitive)
    return None if elements is None else _command_set(elements)


def _command_set(elements: list[bytes]) -> bytes:
    body = b"".join(elements)
    return _ELEMENT_HEADER.pack(0, _COMMAND_GROUP_LENGTH, 4) + _UL.pack(len(body)) + body


def _request(primitive: C_STORE) -> list[bytes] | None:
    sop_class, sop_instance = primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID
    if (
        data_set_path(primitive) is None
        or primitive.MessageID is None
        or sop_class is None
        or sop_instance is None
        or primitive.MoveOriginatorApplicationEntityTitle is not None
        or primitive.MoveOriginatorMessageID is not None
    ):
        return None
    return _request_elements(primitive.MessageID, primitive.Priority, sop_class, sop_instance)


def _request_elements(
    message_id: int, priority: int, sop_class: str, sop_instance: str
) -> list[bytes]:
    return [
        _ui(_AFFECTED_SOP_CLASS_UID, sop_class),
        _us(_COMMAND_FIELD, C_STORE_RQ_FIELD),
        _us(_MESSAGE_ID, message_id),
        _us(_PRIORITY, priority),
        _us(_COMMAND_DATA_SET_TYPE, DATA_SET_PRESENT),
        _ui(_AFFECTED_SOP_INSTANCE_UID, sop_instance),
    ]


def store_request_command(request: StoreRequest) -> bytes:
    """The command set of ``request``, as pynetdicom encodes a C-STORE-RQ."""
    return _command_set(
        _request_elements(
            request.message_id, request.priority, request.sop_class_uid, request.sop_instance_uid
        )
    )


def _response(primitive: C_STORE) -> list[bytes] | None:
    responded_to, status = primitive.MessageIDBeingRespondedTo, primitive.Status
    if (
        responded_to is None
        or status is None
        or primitive.ErrorComment is not None
        or primitive.OffendingElement is not None
    ):
        return None
    return _response_elements(
        responded_to, primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID, status
    )


def _response_elements(
    responded_to: int, sop_class: str | None, sop_instance: str | None, status: int
) -> list[bytes]:
    return [
        *([] if sop_class is None else [_ui(_AFFECTED_SOP_CLASS_UID, sop_class)]),
        _us(_COMMAND_FIELD, C_STORE_RSP_FIELD),
        _us(_MESSAGE_ID_BEING_RESPONDED_TO, responded_to),
        _us(_COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        _us(_STATUS, status),
        *([] if sop_instance is None else [_ui(_AFFECTED_SOP_INSTANCE_UID, sop_instance)]),
    ]


def store_response(
    message_id: int, sop_class_uid: str, sop_instance_uid: str, status: int
) -> bytes:
    """The command set of the C-STORE-RSP to request ``message_id``, as pynetdicom encodes it."""
    return _command_set(_response_elements(message_id, sop_class_uid, sop_instance_uid, status))


def command_pdus(context_id: int, command: bytes, max_pdu_length: int) -> bytes:
    """``command`` as the P-DATA-TF PDUs pynetdicom would send it in (one fragment each)."""
    pieces = fragments(command, max_pdu_length)
    last = len(pieces) - 1
    return b"".join(
        pdu_header(context_id, 1 + len(piece))
        + bytes([COMMAND_BIT | LAST_BIT if index == last else COMMAND_BIT])
        + piece
        for index, piece in enumerate(pieces)
    )


@dataclass(frozen=True)
class StoreRequest:
    """A C-STORE-RQ, decoded from its command set."""

    context_id: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int


def _uid(value: bytes) -> str | None:
    if len(value) > _MAX_UID_BYTES:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text.rstrip("\0 ")


def _elements(command: bytes | memoryview, known: frozenset[int]) -> dict[int, bytes] | None:
    """The values of a command set's elements (implicit VR little endian) by element number;
    None if it holds an element not ``known``, one twice, a US of another length, a group
    length that is not the rest's, or cannot be read."""
    values: dict[int, bytes] = {}
    position = 0
    end = len(command)
    while position < end:
        if end - position < _ELEMENT_HEADER.size:
            return None
        group, element, length = _ELEMENT_HEADER.unpack_from(command, position)
        position += _ELEMENT_HEADER.size
        if group != 0 or position + length > end or element in values:
            return None
        value = bytes(command[position : position + length])
        position += length
        if element == _COMMAND_GROUP_LENGTH:
            if length != _UL.size or _UL.unpack(value)[0] != end - position:
                return None
            continue
        if element not in known or (element in _US_FIELDS and length != _US.size):
            return None
        values[element] = value
    return values


def store_request(context_id: int, command: bytes | memoryview) -> StoreRequest | None:
    """The C-STORE-RQ that ``command`` (a whole command set, implicit VR little endian) encodes,
    or None when it is anything else: another command, a C-STORE-RQ without a data set, one
    with elements this decoder does not know (a C-MOVE originator, say), or one it cannot
    read. None is never an error: pynetdicom then decodes the command as it always has."""
    values = _elements(command, _REQUIRED)
    if values is None or values.keys() != _REQUIRED:
        return None
    if _US.unpack(values[_COMMAND_FIELD])[0] != C_STORE_RQ_FIELD:
        return None
    if _US.unpack(values[_COMMAND_DATA_SET_TYPE])[0] == NO_DATA_SET:
        return None
    sop_class = _uid(values[_AFFECTED_SOP_CLASS_UID])
    sop_instance = _uid(values[_AFFECTED_SOP_INSTANCE_UID])
    if not sop_class or not sop_instance:
        return None
    return StoreRequest(
        context_id=context_id,
        message_id=_US.unpack(values[_MESSAGE_ID])[0],
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        priority=_US.unpack(values[_PRIORITY])[0],
    )


def store_response_primitive(command: bytes | memoryview) -> C_STORE | None:
    """The C-STORE-RSP that ``command`` encodes, as the primitive pynetdicom would decode it
    into, or None when it is anything else or holds more (an error comment, an offending
    element, a UID that is not plain text): pynetdicom then decodes it as it always has."""
    values = _elements(command, _RESPONSE_ELEMENTS)
    if values is None or not values.keys() >= _RESPONSE_REQUIRED:
        return None
    if _US.unpack(values[_COMMAND_FIELD])[0] != C_STORE_RSP_FIELD:
        return None
    if _US.unpack(values[_COMMAND_DATA_SET_TYPE])[0] != NO_DATA_SET:
        return None
    uids: dict[int, str] = {}
    for element in _UI_ELEMENTS & values.keys():
        text = _uid(values[element])
        # pydicom would split several values, or strip leading spaces: left to it.
        if not text or "\\" in text or text != text.lstrip():
            return None
        uids[element] = text
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = _US.unpack(values[_MESSAGE_ID_BEING_RESPONDED_TO])[0]
    primitive.Status = _US.unpack(values[_STATUS])[0]
    if _AFFECTED_SOP_CLASS_UID in uids:
        primitive.AffectedSOPClassUID = uids[_AFFECTED_SOP_CLASS_UID]
    if _AFFECTED_SOP_INSTANCE_UID in uids:
        primitive.AffectedSOPInstanceUID = uids[_AFFECTED_SOP_INSTANCE_UID]
    return primitive


def fragments(data: bytes, max_pdu_length: int) -> list[bytes]:
    """``data`` cut as pynetdicom cuts a message part: pieces of ``max_pdu_length - 6`` bytes
    (the PDV item's header), or one piece when the peer set no limit (0)."""
    if max_pdu_length == 0:
        return [data]
    size = fragment_size(max_pdu_length)
    return [data[start : start + size] for start in range(0, len(data), size)] or [b""]
