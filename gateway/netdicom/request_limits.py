"""A connection's first PDU, refused before pynetdicom decodes it: too long, or an
A-ASSOCIATE-RQ proposing more presentation contexts than PS3.8 allows.

pynetdicom reads a request whole and decodes every item of it into objects, then negotiates
each proposed transfer syntax: an 8 MB request (128 contexts of 2,201 transfer syntaxes each)
took the gateway 10.6 s and 128 MB to answer, while a legitimate request is a few kB
(docs/reliability.md, "Oversized association requests"). The prompt DUL
(gateway/netdicom/prompt_dul.py) reads the first PDU's header, and its body only when the
header passes :func:`header_refusal`; a body that fails :func:`body_refusal` is not decoded
either. A refused request is answered with :func:`rejection`.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger(__name__)

#: PDU header: type, reserved, length of what follows (PS3.8 9.3.1).
PDU_HEADER = struct.Struct(">BBL")
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
#: Presentation context IDs are the odd numbers 1-255 (PS3.8 9.3.2.2), so a request can
#: propose at most 128 contexts.
MAX_PRESENTATION_CONTEXTS = 128
#: The A-ASSOCIATE-RJ answered (PS3.8 9.3.4): rejected-permanent, by the service user, no
#: reason given; a sender should not try the same request again.
REJECTED_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
NO_REASON_GIVEN = 0x01

#: How long the rest of a refused request is read and dropped, so that the rejection reaches
#: the sender: closing with its bytes unread would reset the connection, and a sender still
#: writing its request would see the reset instead. A slower sender gets the reset.
DISCARD_SECONDS = 5.0
#: At most this much of it is read (the largest limit the settings allow): a peer that claims
#: 4 GiB and sends on gets the reset, without a thread copying its bytes for long.
DISCARD_MAX_BYTES = 64 * 1024 * 1024

_DISCARD_BUFFER_BYTES = 65_536
_REJECTION = struct.Struct(">BBLBBBB")
_REJECTION_LENGTH = 4
#: An A-ASSOCIATE-RQ's fixed fields before its items: protocol version, reserved, called and
#: calling AE titles, reserved (PS3.8 9.3.2).
_FIXED_FIELDS = 2 + 2 + 16 + 16 + 32
_ITEM_HEADER = struct.Struct(">BBH")
_PRESENTATION_CONTEXT_ITEM = 0x20


class Refusal(StrEnum):
    """Why a request was refused: its name in the log and in the rejection metric."""

    TOO_LONG = "request-too-long"
    TOO_MANY_CONTEXTS = "too-many-contexts"


def _count_nothing(refusal: Refusal) -> None:
    """Whom a limit tells about a refusal when nobody counts them."""


@dataclass(frozen=True)
class RequestLimit:
    """What an acceptor refuses before decoding (its AE carries it: gateway/netdicom/ae.py)."""

    #: Longest first PDU taken, header included.
    max_bytes: int
    #: Called on the connection's thread for each refusal (ingest counts them).
    on_refused: Callable[[Refusal], None] = _count_nothing


def over_negotiated_length(pdu_type: int, length: int, maximum_length: int) -> bool:
    """Whether a PDU after the request breaks the maximum length its receiver announced
    (PS3.8 D.1: it bounds a P-DATA-TF PDU's variable field; 0 announces no limit)."""
    return pdu_type == P_DATA_TF and maximum_length != 0 and length > maximum_length


def header_refusal(length: int, max_bytes: int) -> Refusal | None:
    """Whether a connection's first PDU is refused on its header alone: ``length`` is the
    header's length field, ``max_bytes`` the limit for the whole PDU.

    Whatever its type: a first PDU that is not an A-ASSOCIATE-RQ is refused by the state
    machine anyway (PS3.8 9.2, state 2), and one over the limit is not worth reading either.
    """
    if PDU_HEADER.size + length > max_bytes:
        return Refusal.TOO_LONG
    return None


def body_refusal(pdu_type: int, body: bytes | bytearray) -> Refusal | None:
    """Whether a connection's first PDU is refused on its body (not yet decoded)."""
    if pdu_type == A_ASSOCIATE_RQ and presentation_contexts(body) > MAX_PRESENTATION_CONTEXTS:
        return Refusal.TOO_MANY_CONTEXTS
    return None


def presentation_contexts(body: bytes | bytearray) -> int:
    """The presentation context items of an A-ASSOCIATE-RQ's ``body`` (after the PDU header),
    counted up to one more than :data:`MAX_PRESENTATION_CONTEXTS`.

    Only the items' headers are read; counting stops where an item would run past the end
    (pynetdicom's decoding refuses such a request itself).
    """
    count = 0
    offset = _FIXED_FIELDS
    while offset + _ITEM_HEADER.size <= len(body) and count <= MAX_PRESENTATION_CONTEXTS:
        item_type, _, item_length = _ITEM_HEADER.unpack_from(body, offset)
        offset += _ITEM_HEADER.size + item_length
        if offset > len(body):
            break
        count += item_type == _PRESENTATION_CONTEXT_ITEM
    return count


def rejection() -> bytes:
    """The A-ASSOCIATE-RJ PDU a refused request is answered with."""
    return _REJECTION.pack(
        A_ASSOCIATE_RJ,
        0,
        _REJECTION_LENGTH,
        0,
        REJECTED_PERMANENT,
        SOURCE_SERVICE_USER,
        NO_REASON_GIVEN,
    )


def answer_refused(connection: socket.socket, unread: int) -> None:
    """Send :func:`rejection` on ``connection``, then read and drop up to ``unread`` bytes (what
    is left of the request), until the peer closes, for :data:`DISCARD_SECONDS` and
    :data:`DISCARD_MAX_BYTES` at most.

    The caller closes the connection; memory stays one small buffer whatever the peer sends.
    """
    deadline = time.monotonic() + DISCARD_SECONDS
    unread = min(unread, DISCARD_MAX_BYTES)
    buffer = bytearray(_DISCARD_BUFFER_BYTES)
    try:
        connection.sendall(rejection())
        connection.shutdown(socket.SHUT_WR)
        while unread > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            connection.settimeout(remaining)
            count = connection.recv_into(buffer, min(unread, len(buffer)))
            if count == 0:
                return
            unread -= count
    except OSError:  # reset or gone (the caller closes either way), or past the deadline
        return


def refuse(
    connection: socket.socket | None,
    peer: str,
    limit: RequestLimit,
    refusal: Refusal,
    *,
    size: int,
    unread: int,
) -> None:
    """Log and count the refusal of a first PDU of ``size`` bytes from ``peer``, and answer it
    on ``connection`` (:func:`answer_refused`); the caller closes the connection."""
    log.warning(
        "association request from %s refused before decoding: %s (%d bytes; at most %d bytes "
        "and %d presentation contexts are taken)",
        peer,
        refusal,
        size,
        limit.max_bytes,
        MAX_PRESENTATION_CONTEXTS,
    )
    if connection is not None:
        answer_refused(connection, unread)
    limit.on_refused(refusal)
