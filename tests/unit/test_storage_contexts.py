"""Which abstract syntaxes ingest accepts: Storage SOP classes and Verification only."""

from __future__ import annotations

import pytest

from gateway.netdicom.storage_contexts import is_storage_sop_class


@pytest.mark.parametrize(
    ("uid", "storage"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", True),  # CT Image Storage
        ("1.2.840.10008.5.1.4.1.1.88.22", True),  # Enhanced SR Storage
        ("1.2.840.10008.5.1.4.1.1.6", True),  # Ultrasound Image Storage (retired)
        ("1.2.840.10008.5.1.4.39.1", True),  # Color Palette Storage, outside the root
        ("1.2.840.10008.5.1.4.1.1.999.1", True),  # a standard class newer than pydicom
        ("1.2.826.0.1.3680043.9999.1", True),  # private
        ("1.2.840.10008.5.1.4.31", False),  # Modality Worklist FIND
        ("1.2.840.10008.5.1.4.1.2.1.1", False),  # Patient Root Q/R FIND
        ("1.2.840.10008.5.1.4.1.2.2.2", False),  # Study Root Q/R MOVE
        ("1.2.840.10008.5.1.4.39.2", False),  # Color Palette Q/R FIND
        ("1.2.840.10008.1.20.1", False),  # Storage Commitment Push Model
        ("1.2.840.10008.5.1.1.9", False),  # Basic Grayscale Print Management
        ("1.2.840.10008.9.9.9", False),  # an unknown standard UID outside the storage root
    ],
)
def test_storage_sop_classes(uid: str, storage: bool) -> None:
    assert is_storage_sop_class(uid) is storage
