"""C-STORE responses decoded directly come out as the primitives pynetdicom decodes them into;
anything else is still decoded by pynetdicom."""

from __future__ import annotations

import struct

import pytest
from pydicom.tag import Tag
from pynetdicom import AE
from pynetdicom._globals import MODE_REQUESTOR
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode as pynetdicom_encode
from pynetdicom.pdu_primitives import P_DATA

from gateway.netdicom.store_dimse import StoreDIMSE
from gateway.netdicom.store_messages import store_response_primitive

CT = "1.2.840.10008.5.1.4.1.1.2"
ODD_UID = "1.2.3.4.5"  # 9 characters: padded
EVEN_UID = "1.2.3.4.56"
COMMAND_LAST = b"\x03"
ATTRIBUTES = (
    "MessageIDBeingRespondedTo",
    "Status",
    "AffectedSOPClassUID",
    "AffectedSOPInstanceUID",
    "ErrorComment",
    "OffendingElement",
)


def _response(status: int = 0x0000, **values: object) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.Status = status
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = EVEN_UID
    for name, value in values.items():
        setattr(primitive, name, value)
    return primitive


def _command(primitive: C_STORE | C_ECHO) -> bytes:
    message = C_STORE_RSP() if isinstance(primitive, C_STORE) else C_ECHO_RSP()
    message.primitive_to_message(primitive)
    encoded = pynetdicom_encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


def _pdata(context_id: int, *values: bytes) -> P_DATA:
    primitive = P_DATA()
    primitive.presentation_data_value_list.extend((context_id, value) for value in values)
    return primitive


def _received(provider: type[DIMSEServiceProvider], primitive: P_DATA) -> tuple[int, object]:
    dimse = provider(Association(AE(), MODE_REQUESTOR))
    dimse.receive_primitive(primitive)
    assert dimse.msg_queue.qsize() == 1
    context_id, message = dimse.msg_queue.get_nowait()
    assert context_id is not None
    return context_id, message


def _described(primitive: object) -> dict[str, object]:
    return {name: getattr(primitive, name, None) for name in ATTRIBUTES}


@pytest.mark.parametrize(
    "response",
    [
        _response(),
        _response(status=0xB000, AffectedSOPInstanceUID=ODD_UID),
        _response(status=0xA900, AffectedSOPClassUID=ODD_UID),
        _response(status=0xC000, AffectedSOPClassUID=None, AffectedSOPInstanceUID=None),
        _response(status=0x0122, AffectedSOPClassUID=None),
        _response(status=0xA700, AffectedSOPInstanceUID="1." + "2" * 62),
        _response(status=0xC000, ErrorComment="cannot understand"),  # left to pynetdicom
        _response(status=0xC000, OffendingElement=[Tag(0x0008, 0x0018)]),  # left to pynetdicom
    ],
)
def test_a_response_is_received_as_pynetdicom_decodes_it(response: C_STORE) -> None:
    pdata = _pdata(5, COMMAND_LAST + _command(response))
    ours = _received(StoreDIMSE, pdata)
    theirs = _received(DIMSEServiceProvider, pdata)
    assert ours[0] == theirs[0] == 5
    assert type(ours[1]) is C_STORE
    assert _described(ours[1]) == _described(theirs[1])
    assert ours[1]._context_id == theirs[1]._context_id == 5  # type: ignore[attr-defined]


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, element, len(value)) + value


def _command_set(**changed: bytes | None) -> bytes:
    """A C-STORE-RSP command set element by element (success, message 7, no UIDs), with
    ``changed`` values by element name (None: left out)."""
    values: dict[str, bytes | None] = {
        "sop_class": None,
        "field": b"\x01\x80",
        "responded_to": b"\x07\x00",
        "data_set_type": b"\x01\x01",
        "status": b"\x00\x00",
    }
    values.update(changed)
    numbers = {
        "sop_class": 0x0002,
        "field": 0x0100,
        "responded_to": 0x0120,
        "data_set_type": 0x0800,
        "status": 0x0900,
    }
    body = b"".join(
        _element(numbers[name], value) for name, value in values.items() if value is not None
    )
    return _element(0x0000, struct.pack("<I", len(body))) + body


ECHO_RESPONSE = C_ECHO()
ECHO_RESPONSE.MessageIDBeingRespondedTo = 1
ECHO_RESPONSE.Status = 0
STORE_RESPONSE = _command(_response())


@pytest.mark.parametrize(
    ("command", "why"),
    [
        (_command(ECHO_RESPONSE), "another command"),
        (_command(_response(status=0xC000, ErrorComment="x")), "an error comment"),
        (STORE_RESPONSE[:-3], "cut short"),
        (STORE_RESPONSE + _element(0x0700, b"\x00\x00"), "an element of a request"),
        (_command_set(status=None), "no status"),
        (_command_set(sop_class=b"1.2.3\\1.2.4\x00"), "two UIDs in one element"),
        (_command_set(data_set_type=b"\x00\x00"), "a data set follows"),
        (_command_set(field=b"\x01\x80\x00"), "a US of three bytes"),
    ],
)
def test_what_is_not_decoded_here(command: bytes, why: str) -> None:
    assert store_response_primitive(command) is None, why


@pytest.mark.parametrize(
    "values",
    [
        (b"\x01" + STORE_RESPONSE[:20], b"\x03" + STORE_RESPONSE[20:]),  # in two fragments
        (b"\x01" + STORE_RESPONSE,),  # not the last fragment
    ],
)
def test_a_response_in_several_fragments_goes_through_pynetdicom(values: tuple[bytes]) -> None:
    dimse = StoreDIMSE(Association(AE(), MODE_REQUESTOR))
    for value in values:
        dimse.receive_primitive(_pdata(1, value))
    if len(values) == 1:
        assert dimse.msg_queue.empty()
        assert dimse.message is not None  # pynetdicom waits for the rest
    else:
        _, message = dimse.msg_queue.get_nowait()
        assert _described(message) == _described(_response())
