"""The C-STORE fast path: an established association's C-STORE requests read straight off the
connection, without pynetdicom's DIMSE machinery.

pynetdicom turns every P-DATA-TF PDU into a primitive, hands it through queues and a state
machine to the association thread, decodes the command set with pydicom, writes the data set
to a file whose file meta it builds with pydicom, and answers through the same path back:
most of the CPU one instance costs (docs/performance.md). Here the DUL thread itself reads the
PDU's presentation data values with ``struct``, decodes a C-STORE-RQ command set directly,
writes the data set fragments as they arrive into what the receiver gives
(:class:`StoreReceiver`), and sends the C-STORE-RSP the receiver's status asks for.

It takes only what it fully understands, and only at a message boundary: a P-DATA-TF PDU whose
first value is a whole C-STORE-RQ command (with a data set to follow) on an accepted context of
the same SOP class, while pynetdicom has no message of its own half-received. Anything else
(a C-ECHO, any other service, a command in several fragments, a malformed PDU, an A-RELEASE-RQ,
an A-ABORT) is handed to pynetdicom exactly as it arrived, so its state machine answers it as
it always has. Once a message is taken, a PDU that breaks it (a value of another context, a
command fragment in the middle of a data set, a malformed item) is a protocol error: the
partial data set is discarded and the association is aborted, as pynetdicom does for a DIMSE
message it cannot decode.

The command set is decoded beside its encoder (gateway/netdicom/store_messages.py). This module
is pure: :class:`DirectStore` is fed PDU bodies and gives verdicts; the DUL thread
(gateway/netdicom/prompt_dul.py) reads the connection and acts on them.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.netdicom.pdata_run import COMMAND_BIT, LAST_BIT
from gateway.netdicom.store_messages import StoreRequest, store_request, store_response

log = logging.getLogger(__name__)

_PDV_HEADER = struct.Struct(">LB")  # item length, presentation context ID


class MalformedPData(ValueError):
    """A P-DATA-TF PDU whose presentation data value items do not fill it exactly."""


@dataclass(frozen=True)
class Value:
    """One presentation data value: its context, whether it is command or data, and last."""

    context_id: int
    command: bool
    last: bool
    fragment: memoryview


def presentation_data_values(body: memoryview) -> list[Value]:
    """The items of a P-DATA-TF PDU's body (what follows its 6-byte header), in order.

    Raises :class:`MalformedPData` for an item shorter than its header (PS3.8 9.3.5.1: an item
    holds at least the context ID and the message control header) or one running past the end.
    """
    values = []
    position = 0
    end = len(body)
    while position < end:
        if end - position < _PDV_HEADER.size + 1:
            raise MalformedPData(f"a value item header is cut short at byte {position}")
        item_length, context_id = _PDV_HEADER.unpack_from(body, position)
        if item_length < 2 or position + 4 + item_length > end:
            raise MalformedPData(f"a value item at byte {position} claims {item_length} bytes")
        control = body[position + 5]
        fragment = body[position + 6 : position + 4 + item_length]
        values.append(
            Value(context_id, bool(control & COMMAND_BIT), bool(control & LAST_BIT), fragment)
        )
        position += 4 + item_length
    if not values:
        raise MalformedPData("a P-DATA-TF PDU without a value item")
    return values


class IncomingInstance(Protocol):
    """Where one C-STORE's data set goes while it arrives."""

    def write(self, fragment: memoryview) -> None:
        """The next fragment of the data set, as received."""

    def finish(self) -> int:
        """The data set is complete: make it durable, or refuse it; the C-STORE status."""

    def discard(self) -> None:
        """The message will not complete: remove what was written."""


class StoreReceiver(Protocol):
    """What receives the C-STOREs of one association."""

    def begin(self, request: StoreRequest, transfer_syntax: str) -> IncomingInstance | None:
        """Somewhere to write the data set of ``request``, or None to leave it to pynetdicom."""


@dataclass(frozen=True)
class Context:
    """An accepted presentation context: what the requests on it may carry."""

    abstract_syntax: str
    transfer_syntax: str


class Verdict(enum.Enum):
    #: The PDU was taken; nothing is left for pynetdicom.
    TAKEN = enum.auto()
    #: Not ours: give the PDU to pynetdicom as it arrived.
    NOT_TAKEN = enum.auto()
    #: A message that was taken is broken: abort the association.
    BROKEN = enum.auto()


class DirectStore:
    """The C-STORE fast path of one association; fed one PDU at a time by its DUL thread.

    ``context`` looks up an accepted presentation context by ID; ``respond`` sends a command
    set (a C-STORE-RSP) on a context.
    """

    def __init__(
        self,
        receiver: StoreReceiver,
        context: Callable[[int], Context | None],
        respond: Callable[[int, bytes], None],
    ) -> None:
        self._receiver = receiver
        self._context = context
        self._respond = respond
        self._request: StoreRequest | None = None
        self._incoming: IncomingInstance | None = None

    @property
    def in_message(self) -> bool:
        """A C-STORE taken by this path is half received."""
        return self._incoming is not None

    def feed(self, body: memoryview, may_begin: bool) -> Verdict:
        """Act on the body of one P-DATA-TF PDU.

        ``may_begin`` says that a new message may start here: the association is established
        and pynetdicom is not in the middle of a message of its own.
        """
        try:
            values = presentation_data_values(body)
        except MalformedPData as exc:
            if not self.in_message:
                return Verdict.NOT_TAKEN  # pynetdicom's decoder reports it as it always has
            log.warning("C-STORE data set broken off: %s", exc)
            self.discard()
            return Verdict.BROKEN
        if not self.in_message:
            if not may_begin or not self._begin(values[0]):
                return Verdict.NOT_TAKEN
            values = values[1:]
        for value in values:
            if not self._take(value):
                self.discard()
                return Verdict.BROKEN
        return Verdict.TAKEN

    def _begin(self, first: Value) -> bool:
        if not (first.command and first.last):
            return False
        request = store_request(first.context_id, first.fragment)
        if request is None:
            return False
        context = self._context(first.context_id)
        if context is None or context.abstract_syntax != request.sop_class_uid:
            return False
        incoming = self._receiver.begin(request, context.transfer_syntax)
        if incoming is None:
            return False
        self._request, self._incoming = request, incoming
        return True

    def _take(self, value: Value) -> bool:
        request, incoming = self._request, self._incoming
        if request is None or incoming is None:
            # Another message in the same PDU as the end of the last one: the peer did not wait
            # for the response, which only asynchronous operations (never negotiated) allow.
            log.warning("a second message in the PDU that ended a C-STORE")
            return False
        if value.command or value.context_id != request.context_id:
            log.warning(
                "C-STORE message ID %d broken off: a %s value on context %d in its data set",
                request.message_id,
                "command" if value.command else "data",
                value.context_id,
            )
            return False
        incoming.write(value.fragment)
        if value.last:
            self._request = self._incoming = None
            status = incoming.finish()
            self._respond(
                request.context_id,
                store_response(
                    request.message_id, request.sop_class_uid, request.sop_instance_uid, status
                ),
            )
        return True

    def discard(self) -> None:
        """Drop a half-received message (the association is ending or broken)."""
        incoming = self._incoming
        self._request = self._incoming = None
        if incoming is not None:
            incoming.discard()
