"""The C-STORE fast path's decisions: which PDUs it takes, what it makes of them, and when a
message it took is broken. Command sets are encoded by pynetdicom itself, so the decoder is
checked against the encoder every peer of ours is tested with."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode as pynetdicom_encode

from gateway.netdicom.direct_store import (
    Context,
    DirectStore,
    MalformedPData,
    Verdict,
    presentation_data_values,
)
from gateway.netdicom.store_messages import StoreRequest, encode, store_request, store_response

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
INSTANCE = "1.2.3.4.5"  # odd: padded with a NUL on the wire
CONTEXT = 1
# Message Control Header values (PS3.8 E.2).
DATA, COMMAND, DATA_LAST, COMMAND_LAST = 0x00, 0x01, 0x02, 0x03


def _store_command(
    *, message_id: int = 7, sop_class: str = CT, data_set: bool = True, **extra: object
) -> bytes:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.Priority = 0
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = INSTANCE
    for name, value in extra.items():
        setattr(primitive, name, value)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    # pynetdicom sets it from the primitive's data set, which these requests do not carry.
    message.command_set.CommandDataSetType = 0x0001 if data_set else 0x0101
    encoded = pynetdicom_encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


def _echo_command() -> bytes:
    primitive = C_ECHO()
    primitive.MessageID = 3
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    encoded = pynetdicom_encode(message.command_set, True, True)
    assert encoded is not None
    return encoded


def _pdv(control: int, fragment: bytes, context_id: int = CONTEXT) -> bytes:
    return struct.pack(">LBB", 2 + len(fragment), context_id, control) + fragment


def _body(*values: bytes) -> memoryview:
    return memoryview(b"".join(values))


def test_a_command_set_encoded_by_pynetdicom_is_decoded() -> None:
    assert store_request(CONTEXT, _store_command(message_id=65535)) == StoreRequest(
        context_id=CONTEXT,
        message_id=65535,
        sop_class_uid=CT,
        sop_instance_uid=INSTANCE,
        priority=0,
    )


def _without_group_length(command: bytes) -> bytes:
    return command[12:]  # (0000,0000) UL: 8-byte header and a 4-byte value


def _with_group_length(command: bytes, length: int) -> bytes:
    return command[:8] + struct.pack("<I", length) + command[12:]


@pytest.mark.parametrize(
    ("command", "why"),
    [
        (_echo_command(), "another service"),
        (_store_command(data_set=False), "no data set follows"),
        (_store_command(MoveOriginatorApplicationEntityTitle="MOVER"), "an element not decoded"),
        (_store_command()[:-3], "cut short"),
        (_with_group_length(_store_command(), 4), "a group length that lies"),
        (_store_command() + _store_command()[12:20], "an element twice"),
        (_store_command().replace(b"1.2.3.4.5\0", b"1.2.3.4.\xff\0"), "a UID that is not ASCII"),
    ],
)
def test_what_the_decoder_does_not_fully_understand_is_left_to_pynetdicom(
    command: bytes, why: str
) -> None:
    assert store_request(CONTEXT, command) is None, why


def test_the_group_length_is_optional() -> None:
    assert store_request(CONTEXT, _without_group_length(_store_command())) is not None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "without a value item"),
        (struct.pack(">LB", 1, CONTEXT) + b"\x03", "claims 1 bytes"),
        (struct.pack(">LBB", 10, CONTEXT, DATA) + b"short", "claims 10 bytes"),
        (_pdv(DATA, b"ok") + b"\x00\x00", "cut short"),
    ],
)
def test_malformed_value_items_are_named(body: bytes, error: str) -> None:
    with pytest.raises(MalformedPData, match=error):
        presentation_data_values(memoryview(body))


def test_value_items_are_read_in_order() -> None:
    values = presentation_data_values(
        _body(_pdv(COMMAND_LAST, b"cmd"), _pdv(DATA, b"ab", 3), _pdv(DATA_LAST, b""))
    )
    assert [(v.context_id, v.command, v.last, bytes(v.fragment)) for v in values] == [
        (CONTEXT, True, True, b"cmd"),
        (3, False, False, b"ab"),
        (CONTEXT, False, True, b""),
    ]


@dataclass
class _Incoming:
    status: int
    written: bytearray = field(default_factory=bytearray)
    finished: bool = False
    discarded: bool = False

    def write(self, fragment: memoryview) -> None:
        self.written += fragment

    def finish(self) -> int:
        self.finished = True
        return self.status

    def discard(self) -> None:
        self.discarded = True


@dataclass
class _Receiver:
    status: int = 0x0000
    refuse: bool = False
    begun: list[tuple[StoreRequest, str]] = field(default_factory=list)
    instances: list[_Incoming] = field(default_factory=list)

    def begin(self, request: StoreRequest, transfer_syntax: str) -> _Incoming | None:
        if self.refuse:
            return None
        self.begun.append((request, transfer_syntax))
        self.instances.append(_Incoming(self.status))
        return self.instances[-1]


@dataclass
class _Path:
    receiver: _Receiver = field(default_factory=_Receiver)
    contexts: dict[int, Context] = field(
        default_factory=lambda: {CONTEXT: Context(CT, EXPLICIT_LE), 3: Context(MR, EXPLICIT_LE)}
    )
    responses: list[tuple[int, bytes]] = field(default_factory=list)

    def store(self) -> DirectStore:
        return DirectStore(
            self.receiver, self.contexts.get, lambda cx, cmd: self.responses.append((cx, cmd))
        )


def test_a_c_store_is_taken_written_and_answered() -> None:
    path = _Path()
    store = path.store()
    assert store.feed(_body(_pdv(COMMAND_LAST, _store_command())), True) is Verdict.TAKEN
    assert store.in_message
    assert store.feed(_body(_pdv(DATA, b"abc")), True) is Verdict.TAKEN
    assert store.feed(_body(_pdv(DATA, b"de"), _pdv(DATA_LAST, b"f")), True) is Verdict.TAKEN
    (incoming,) = path.receiver.instances
    assert (bytes(incoming.written), incoming.finished) == (b"abcdef", True)
    assert path.receiver.begun[0][1] == EXPLICIT_LE
    assert path.responses == [(CONTEXT, store_response(7, CT, INSTANCE, 0x0000))]
    assert not store.in_message


def test_the_response_carries_the_receivers_status_as_pynetdicom_encodes_it() -> None:
    path = _Path(_Receiver(status=0xA700))
    store = path.store()
    store.feed(_body(_pdv(COMMAND_LAST, _store_command()), _pdv(DATA_LAST, b"x")), True)
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 7
    response.Status = 0xA700
    response.AffectedSOPClassUID = CT
    response.AffectedSOPInstanceUID = INSTANCE
    assert path.responses == [(CONTEXT, encode(response))]


@pytest.mark.parametrize(
    ("first", "may_begin", "path", "why"),
    [
        (_pdv(COMMAND_LAST, _echo_command()), True, _Path(), "a C-ECHO"),
        (_pdv(COMMAND, _store_command()), True, _Path(), "a command in several fragments"),
        (_pdv(DATA, b"x"), True, _Path(), "a data set without its command"),
        (_pdv(COMMAND_LAST, _store_command()), False, _Path(), "pynetdicom is mid-message"),
        (_pdv(COMMAND_LAST, _store_command(), 5), True, _Path(), "a context not accepted"),
        (_pdv(COMMAND_LAST, _store_command(sop_class=MR)), True, _Path(), "another SOP class"),
        (_pdv(COMMAND_LAST, _store_command()), True, _Path(_Receiver(refuse=True)), "refused"),
        (b"\x00\x00\x00\x09\x01", True, _Path(), "a malformed PDU"),
    ],
)
def test_what_the_path_does_not_take_is_left_as_it_arrived(
    first: bytes, may_begin: bool, path: _Path, why: str
) -> None:
    store = path.store()
    assert store.feed(memoryview(first), may_begin) is Verdict.NOT_TAKEN, why
    assert not store.in_message
    assert path.responses == []


@pytest.mark.parametrize(
    ("next_pdu", "why"),
    [
        (_pdv(DATA_LAST, b"x", 3), "a value of another context"),
        (_pdv(COMMAND_LAST, _store_command()), "a command inside a data set"),
        (b"\x00\x00\x00\x09\x01", "a malformed PDU"),
        (_pdv(DATA_LAST, b"x") + _pdv(DATA, b"y"), "a value after the last one"),
    ],
)
def test_a_message_broken_after_it_was_taken_is_discarded(next_pdu: bytes, why: str) -> None:
    path = _Path()
    store = path.store()
    store.feed(_body(_pdv(COMMAND_LAST, _store_command()), _pdv(DATA, b"a")), True)
    assert store.feed(memoryview(next_pdu), True) is Verdict.BROKEN, why
    (incoming,) = path.receiver.instances
    assert not store.in_message
    assert incoming.discarded or incoming.finished  # the last case ended the first message


def test_discarding_between_messages_does_nothing() -> None:
    path = _Path()
    store = path.store()
    store.discard()
    store.feed(_body(_pdv(COMMAND_LAST, _store_command()), _pdv(DATA, b"a")), True)
    store.discard()
    (incoming,) = path.receiver.instances
    assert incoming.discarded
    assert not store.in_message
