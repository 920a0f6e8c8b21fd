"""send_stored refuses what it cannot send before sending anything, and aborts an association
whose message it could not finish."""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom._globals import MODE_REQUESTOR
from pynetdicom.association import Association

from gateway.netdicom.pdata_run import TakesRuns
from gateway.netdicom.reactor_hold import HoldableCheckpoint
from gateway.netdicom.store_dimse import StoreDIMSE, send_stored
from gateway.netdicom.store_messages import StoreRequest

REQUEST = StoreRequest(
    context_id=1,
    message_id=1,
    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
    sop_instance_uid="1.2.3",
    priority=2,
)


class _Sent(TakesRuns):
    def __init__(self) -> None:
        self.primitives: list[object] = []

    def send_pdu(self, primitive: object) -> None:
        self.primitives.append(primitive)


def _held_association(aborted: list[bool], *, held: bool = True) -> tuple[Association, _Sent]:
    assoc = Association(AE(), MODE_REQUESTOR)
    assoc.acceptor.maximum_length = 16384
    assoc.dimse = StoreDIMSE(assoc)
    sent = _Sent()
    assoc.dul = sent  # type: ignore[assignment]
    checkpoint = HoldableCheckpoint()
    checkpoint.held = held
    assoc._reactor_checkpoint = checkpoint
    assoc.is_established = True

    def abort(block: bool = True) -> None:
        aborted.append(block)

    assoc.abort = abort  # type: ignore[method-assign]
    return assoc, sent


@pytest.mark.parametrize("offset", [-1, 11])
def test_an_offset_outside_the_file_sends_nothing(tmp_path: Path, offset: int) -> None:
    stored = tmp_path / "instance.dcm"
    stored.write_bytes(b"x" * 10)
    aborted: list[bool] = []
    assoc, sent = _held_association(aborted)
    with pytest.raises(ValueError, match="offset"):
        send_stored(assoc, REQUEST, (stored, offset))
    assert (sent.primitives, aborted) == ([], [])


def test_a_message_cut_short_aborts_the_association(tmp_path: Path) -> None:
    """The command set is on its way when the data set cannot be read."""
    aborted: list[bool] = []
    assoc, sent = _held_association(aborted)
    with pytest.raises(IsADirectoryError):
        send_stored(assoc, REQUEST, (tmp_path, 0))  # a directory: cannot be read as a file
    assert len(sent.primitives) == 1  # the command
    assert aborted == [True]


def test_only_a_held_prompt_association_is_taken(tmp_path: Path) -> None:
    assoc, _ = _held_association([], held=False)
    with pytest.raises(TypeError, match="held"):
        send_stored(assoc, REQUEST, (tmp_path, 0))
