"""Directly encoded C-STORE messages are byte for byte what pynetdicom sends, fragment by
fragment, and everything else is still left to pynetdicom."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydicom.tag import Tag
from pynetdicom import AE, evt
from pynetdicom._globals import MODE_REQUESTOR
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode as pynetdicom_encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from gateway.netdicom.pdata_run import MAX_RUN_FRAGMENTS, RUN_BYTES, PDataRun, TakesRuns
from gateway.netdicom.store_dimse import StoreDIMSE
from gateway.netdicom.store_messages import encode

CT = "1.2.840.10008.5.1.4.1.1.2"
ODD_UID = "1.2.3.4.5"  # 9 characters: padded
EVEN_UID = "1.2.3.4.56"  # 10 characters
DATA_SET_OFFSET = 132


def _request(
    message_id: int = 7, priority: int = 2, sop_class: str = CT, sop_instance: str = ODD_UID
) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.Priority = priority
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive._dataset_path = (Path("unused.dcm"), DATA_SET_OFFSET)
    return primitive


def _response(
    status: int = 0x0000, sop_class: str | None = CT, sop_instance: str | None = EVEN_UID
) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.Status = status
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    return primitive


def _pynetdicoms(primitive: C_STORE) -> bytes:
    message = C_STORE_RQ() if primitive.MessageIDBeingRespondedTo is None else C_STORE_RSP()
    message.primitive_to_message(primitive)
    encoded = pynetdicom_encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


@pytest.mark.parametrize(
    "primitive",
    [
        _request(),
        _request(message_id=1, priority=0, sop_instance=EVEN_UID),
        _request(message_id=65535, priority=1, sop_class=ODD_UID),
        _request(sop_instance="1." + "2" * 62),  # 64 characters, the longest UID
        _response(),
        _response(status=0xB000, sop_instance=ODD_UID),
        _response(status=0xA900, sop_class=ODD_UID),
        _response(status=0xC000, sop_class=None, sop_instance=None),
        _response(status=0x0122, sop_class=None),
    ],
)
def test_a_command_set_is_encoded_as_pynetdicom_encodes_it(primitive: C_STORE) -> None:
    assert encode(primitive) == _pynetdicoms(primitive)


def _with(primitive: C_STORE, **values: object) -> C_STORE:
    for name, value in values.items():
        setattr(primitive, name, value)
    return primitive


@pytest.mark.parametrize(
    "primitive",
    [
        _with(_response(status=0xC000), ErrorComment="cannot understand"),
        _with(_response(status=0xC000), OffendingElement=[Tag(0x0008, 0x0018)]),
        _with(_request(), MoveOriginatorApplicationEntityTitle="MOVER"),
        _with(_request(), MoveOriginatorMessageID=3),
        _with(_request(), _dataset_path=None),  # a data set in memory
        C_ECHO(),
    ],
)
def test_what_is_not_encoded_here_is_left_to_pynetdicom(primitive: object) -> None:
    assert encode(primitive) is None


class _Sent:
    """What a DIMSE provider hands its DUL: each primitive's presentation data values."""

    def __init__(self) -> None:
        self.values: list[tuple[int, bytes]] = []

    def send_pdu(self, primitive: object) -> None:
        self.values.extend(primitive.presentation_data_value_list)  # type: ignore[attr-defined]


def _association(max_pdu_length: int) -> tuple[Association, _Sent]:
    assoc = Association(AE(), MODE_REQUESTOR)
    assoc.acceptor.maximum_length = max_pdu_length
    sent = _Sent()
    assoc.dul.send_pdu = sent.send_pdu  # type: ignore[method-assign]
    return assoc, sent


def _stored_request(directory: Path, data_set_length: int) -> C_STORE:
    """A request whose data set (``data_set_length`` bytes) is read from a file."""
    stored = directory / "instance.dcm"
    stored.write_bytes(b"m" * DATA_SET_OFFSET + bytes(range(256)) * (data_set_length // 256 + 1))
    with stored.open("r+b") as file:
        file.truncate(DATA_SET_OFFSET + data_set_length)
    return _with(_request(), _dataset_path=(stored, DATA_SET_OFFSET))


@pytest.mark.parametrize("max_pdu_length", [0, 4096, 16384, 16384 + 6])
@pytest.mark.parametrize("data_set_length", [0, 1, 16378, 16379, 3 * 16378, 100_000])
def test_a_request_from_a_file_goes_out_in_the_same_fragments(
    tmp_path: Path, max_pdu_length: int, data_set_length: int
) -> None:
    primitive = _stored_request(tmp_path, data_set_length)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    expected = [
        value
        for pdata in message.encode_msg(3, max_pdu_length)
        for value in pdata.presentation_data_value_list
    ]
    assoc, sent = _association(max_pdu_length)
    StoreDIMSE(assoc).send_msg(primitive, 3)
    assert sent.values == expected


class _RunsSent(TakesRuns):
    """A DUL provider that sends runs as they are: what goes on the wire, in order."""

    def __init__(self) -> None:
        self.wire = b""
        self.runs = 0

    def send_pdu(self, primitive: object) -> None:
        if isinstance(primitive, PDataRun):
            self.runs += 1
            self.wire += primitive.encoded()
        else:
            assert isinstance(primitive, P_DATA)
            self.wire += P_DATA_TF(primitive).encode()


@pytest.mark.parametrize("max_pdu_length", [4096, 16384, 16384 + 6, 1024 * 1024])
@pytest.mark.parametrize("data_set_length", [0, 1, 16378, 16379, 3 * 16378, 700_000])
def test_a_request_from_a_file_goes_out_in_runs_of_the_same_pdus(
    tmp_path: Path, max_pdu_length: int, data_set_length: int
) -> None:
    """To a DUL that takes runs, the data set leaves in runs read straight from the file: on
    the wire, the very PDUs pynetdicom would send one by one."""
    primitive = _stored_request(tmp_path, data_set_length)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    expected = b"".join(
        P_DATA_TF(pdata).encode() for pdata in message.encode_msg(3, max_pdu_length)
    )
    assoc, _ = _association(max_pdu_length)
    dul = _RunsSent()
    assoc.dul = dul  # type: ignore[assignment]
    StoreDIMSE(assoc).send_msg(primitive, 3)
    assert dul.wire == expected
    fragment = max_pdu_length - 6
    per_run = max(1, RUN_BYTES // fragment) * fragment  # a PDU above RUN_BYTES: its own run
    assert dul.runs == max(1, -(-data_set_length // per_run))


@pytest.mark.parametrize("max_pdu_length", [1, 5, 6])
def test_a_peer_maximum_with_no_room_for_a_fragment_is_refused(
    tmp_path: Path, max_pdu_length: int
) -> None:
    """As pynetdicom refuses it: nothing half-made goes on the wire."""
    assoc, _ = _association(max_pdu_length)
    dul = _RunsSent()
    assoc.dul = dul  # type: ignore[assignment]
    with pytest.raises(ValueError, match="leaves no room"):
        StoreDIMSE(assoc).send_msg(_stored_request(tmp_path, 100), 3)
    assert dul.wire == b""


def test_tiny_pdus_make_runs_of_bounded_size(tmp_path: Path) -> None:
    """A peer taking 7-byte PDUs (one data byte each) gets them, in runs of at most
    MAX_RUN_FRAGMENTS fragments."""
    assoc, _ = _association(7)
    runs: list[PDataRun] = []

    class _Runs(_RunsSent):
        def send_pdu(self, primitive: object) -> None:
            if isinstance(primitive, PDataRun):
                runs.append(primitive)
            super().send_pdu(primitive)

    dul = _Runs()
    assoc.dul = dul  # type: ignore[assignment]
    StoreDIMSE(assoc).send_msg(_stored_request(tmp_path, 3000), 3)
    assert [run.count for run in runs] == [MAX_RUN_FRAGMENTS, MAX_RUN_FRAGMENTS, 952]


def test_a_response_goes_out_as_one_command_fragment() -> None:
    assoc, sent = _association(16384)
    StoreDIMSE(assoc).send_msg(_response(), 1)
    assert sent.values == [(1, b"\x03" + _pynetdicoms(_response()))]


def test_a_bound_sent_message_handler_does_not_change_what_is_sent() -> None:
    """The message is encoded here all the same; pynetdicom's event is not triggered for it."""
    assoc, sent = _association(16384)
    seen: list[object] = []
    assoc.bind(evt.EVT_DIMSE_SENT, lambda event: seen.append(event.message))
    StoreDIMSE(assoc).send_msg(_response(), 1)
    assert sent.values == [(1, b"\x03" + _pynetdicoms(_response()))]
    assert seen == []


def test_debug_logging_does_not_change_what_is_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pynetdicom's INFO log (its handler logs each request) and ours at DEBUG: the same bytes,
    encoded here, and the request logged here."""
    stored = tmp_path / "instance.dcm"
    stored.write_bytes(b"m" * DATA_SET_OFFSET + b"data")
    primitive = _with(_request(), _dataset_path=(stored, DATA_SET_OFFSET))
    caplog.set_level(logging.INFO, logger="pynetdicom")
    caplog.set_level(logging.DEBUG, logger="gateway.netdicom")
    assoc, sent = _association(16384)
    StoreDIMSE(assoc).send_msg(primitive, 1)
    assert sent.values == [(1, b"\x03" + _pynetdicoms(primitive)), (1, b"\x02data")]
    assert [record.name for record in caplog.records] == ["gateway.netdicom.store_dimse"]
    assert f"message ID 7, context 1, SOP instance {ODD_UID}" in caplog.text


def test_a_response_is_logged_with_its_status(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.netdicom")
    assoc, _sent = _association(16384)
    StoreDIMSE(assoc).send_msg(_response(status=0xB000), 1)
    assert "C-STORE-RSP sent: to message ID 7, context 1, status 0xB000" in caplog.text
