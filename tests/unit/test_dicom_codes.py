"""The reject triples are part of our conformance statement; pin them."""

import pytest

from gateway.dicom_status import Status, stored
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


@pytest.mark.parametrize(
    ("status", "is_stored"),
    [
        (0x0000, True),
        (0x0001, True),
        (0x0107, True),
        (0x0116, True),
        (0xB000, True),
        (0xB006, True),
        (0xB007, True),
        (0xBFFF, True),  # a warning a service defines: still stored
        (0x0106, False),  # failure: invalid attribute value
        (0x0110, False),  # failure: processing failure
        (0x0122, False),  # failure: SOP class not supported
        (0xA700, False),
        (0xA900, False),
        (0xC000, False),
        (0xFE00, False),  # cancelled
    ],
)
def test_warnings_are_stored_and_failures_are_not(status: int, is_stored: bool) -> None:
    assert stored(status) is is_stored
