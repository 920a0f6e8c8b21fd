"""Consecutive data set fragments sent as one write, already encoded as P-DATA-TF PDUs.

pynetdicom turns a data set into one P-DATA primitive per fragment, and every fragment then
crosses from the sending thread to the DUL thread through a queue, the state machine and the
PDU encoder before its own ``send()``. Many peers accept only 16 KiB PDUs (dcmtk's default),
so a 0.5 MB CT slice makes 32 such crossings (docs/performance.md measures what they cost).

A :class:`PDataRun` collects the fragments of one data set in the sending thread, each
encoded exactly as pynetdicom's ``P_DATA_TF`` encodes a single-PDV PDU, up to
:data:`RUN_BYTES` at a time; the DUL thread then sends the run with one call. The PDUs on
the wire are the same, in the same order: only the number of hand-overs changes. pynetdicom's
``EVT_PDU_SENT`` is not triggered for the PDUs of a run (its own handler logs nothing for a
P-DATA-TF, and nothing of ours listens to it).

A data set read from a file is cut into runs directly (:func:`file_runs`), a run's worth of
fragments read at once: no primitive is made per fragment, and a fragment's bytes are not
copied until the run is written.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from pynetdicom.pdu_primitives import P_DATA

#: Encoded PDUs one run holds at most (a single larger PDU makes a run of its own). With the
#: outgoing queue bounded to 16 entries (gateway/netdicom/backpressure.py), 4 MiB per association.
RUN_BYTES = 256 * 1024
_P_DATA_TF = 0x04
#: Message Control Header bits (PS3.8 E.2): set for a command fragment, set for the last one.
COMMAND_BIT = 0x01
LAST_BIT = 0x02
# PDU type, reserved, PDU length; PDV item length, presentation context ID.
_HEADER = struct.Struct(">BBLLB")
#: The PDV item's own header in a PDU: its length (4) and the context ID (1), then the
#: message control header (1); a fragment may be the PDU's maximum length less these.
PDV_OVERHEAD = 6
#: Fragments one run of :func:`file_runs` holds at most: a peer that takes only tiny PDUs
#: must not make a run of 256 KiB into hundreds of thousands of Python objects.
MAX_RUN_FRAGMENTS = 1024


def data_set_fragment(primitive: object) -> tuple[int, bytes] | None:
    """``(context ID, message control header + fragment)`` when ``primitive`` carries exactly one
    fragment of a data set, else None (a command, or anything else, goes through unchanged)."""
    if type(primitive) is not P_DATA:
        return None
    values = primitive.presentation_data_value_list
    if len(values) != 1:
        return None
    context_id, value = values[0]
    if not value or value[0] & COMMAND_BIT:
        return None
    return context_id, value


def pdu_header(context_id: int, value_length: int) -> bytes:
    """The header of a P-DATA-TF PDU holding one presentation data value item whose value (the
    message control header and the fragment) is ``value_length`` bytes, as pynetdicom encodes
    it."""
    item_length = 1 + value_length  # the context ID, then the value
    return _HEADER.pack(_P_DATA_TF, 0, 4 + item_length, item_length, context_id)


def is_last(value: bytes) -> bool:
    """True for the fragment that ends its data set."""
    return bool(value[0] & LAST_BIT)


class PDataRun(P_DATA):
    """Several P-DATA-TF PDUs, encoded, to be written to the connection together.

    It is a P-DATA primitive so that the DUL's state machine takes it for a "P-DATA request"
    (Evt9) and allows it exactly where it allows one. Its presentation data value list stays
    empty: the DUL sends :meth:`encoded` instead of encoding the primitive.
    """

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes | memoryview] = []
        self._size = 0

    def add(self, context_id: int, value: bytes) -> None:
        """Append one fragment as a P-DATA-TF PDU holding one presentation data value item."""
        self._parts += (pdu_header(context_id, len(value)), value)
        self._size += _HEADER.size + len(value)

    def add_fragment(self, context_id: int, last: bool, fragment: bytes | memoryview) -> None:
        """:meth:`add` for a data set fragment given without its message control header."""
        control = LAST_BIT if last else 0
        self._parts += (pdu_header(context_id, 1 + len(fragment)) + bytes((control,)), fragment)
        self._size += _HEADER.size + 1 + len(fragment)

    @property
    def count(self) -> int:
        """Fragments in the run."""
        return len(self._parts) // 2

    @property
    def full(self) -> bool:
        return self._size >= RUN_BYTES

    def encoded(self) -> bytes:
        """The run's PDUs, one after the other."""
        return b"".join(self._parts)


def fragment_size(max_pdu_length: int) -> int:
    """The longest fragment a PDU of ``max_pdu_length`` holds (not 0: no limit). A peer's
    maximum that leaves no room for one raises ValueError, as in pynetdicom."""
    size = max_pdu_length - PDV_OVERHEAD
    if size <= 0:
        raise ValueError(
            f"the peer's maximum PDU length {max_pdu_length} leaves no room for a fragment"
        )
    return size


class TakesRuns:
    """A DUL provider that sends a queued :class:`PDataRun` as it is (prompt_dul.py)."""


def file_runs(context_id: int, path: Path, offset: int, max_pdu_length: int) -> Iterator[PDataRun]:
    """The data set stored in ``path`` from ``offset``, as runs of P-DATA-TF PDUs cut as
    pynetdicom cuts a message part (fragments of ``max_pdu_length`` less the PDV's overhead,
    the last one shorter), read one run at a time. ``max_pdu_length`` must be set (not 0)."""
    size = fragment_size(max_pdu_length)
    per_run = max(1, min(RUN_BYTES // (_HEADER.size + 1 + size), MAX_RUN_FRAGMENTS))
    with path.open("rb") as file:
        remaining = file.seek(0, 2) - file.seek(offset)
        while True:
            data = file.read(min(per_run * size, remaining))
            remaining -= len(data)
            ended = remaining <= 0 or not data
            run = PDataRun()
            # Views, not copies: the run keeps ``data`` until it is written.
            view = memoryview(data)
            for start in range(0, len(data), size) or range(1):  # an empty data set: one piece
                last = ended and start + size >= len(data)
                run.add_fragment(context_id, last, view[start : start + size])
            yield run
            if ended:
                return
