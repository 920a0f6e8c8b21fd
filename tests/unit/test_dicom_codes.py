"""The reject triples are part of our conformance statement; pin them."""

import pytest

from gateway.dicom_status import STORED_WITH_WARNING, Status
from ingest.reject_reasons import (
    CALLED_AE_NOT_RECOGNISED,
    CALLING_AE_NOT_RECOGNISED,
    SPOOL_FULL,
    TOO_MANY_ASSOCIATIONS,
    Reject,
)


@pytest.mark.parametrize(
    ("reject", "triple"),
    [
        (TOO_MANY_ASSOCIATIONS, (2, 3, 2)),
        (SPOOL_FULL, (2, 3, 1)),
        (CALLING_AE_NOT_RECOGNISED, (1, 1, 3)),
        (CALLED_AE_NOT_RECOGNISED, (1, 1, 7)),
    ],
)
def test_reject_triples(reject: Reject, triple: tuple[int, int, int]) -> None:
    assert (reject.result, reject.source, reject.reason) == triple


def test_failure_statuses_are_in_their_ranges() -> None:
    assert Status.OUT_OF_RESOURCES & 0xFF00 == 0xA700
    assert Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS & 0xFF00 == 0xA900
    assert Status.CANNOT_UNDERSTAND & 0xF000 == 0xC000


def test_warnings_are_not_failures() -> None:
    assert all(status & 0xF000 in (0x0000, 0xB000) for status in STORED_WITH_WARNING)
