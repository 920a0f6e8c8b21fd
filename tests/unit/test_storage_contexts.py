"""Which abstract syntaxes ingest accepts: Storage SOP classes and Verification only; and the
roles it answers a role selection with."""

from __future__ import annotations

import pytest
from pynetdicom.presentation import PresentationContext, build_context, negotiate_unrestricted

from gateway.netdicom.storage_contexts import is_storage_sop_class, storage_only


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


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"


def _proposed(context_id: int, abstract_syntax: str) -> PresentationContext:
    context = build_context(abstract_syntax, [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN])
    context.context_id = context_id
    return context


@pytest.mark.parametrize(
    ("roles", "storage_result", "reply"),
    [
        pytest.param(None, 0x00, [], id="none-proposed"),
        pytest.param((True, False), 0x00, [(True, False)], id="scu-only"),
        pytest.param((True, True), 0x00, [(True, True)], id="scu-and-scp"),
        pytest.param((False, True), 0x00, [(False, True)], id="scp-only"),
        # Neither role: the context is rejected (user rejection) and no role item answered.
        pytest.param((False, False), 0x01, [], id="neither"),
    ],
)
def test_role_selection_of_a_storage_context(
    roles: tuple[bool, bool] | None, storage_result: int, reply: list[tuple[bool, bool]]
) -> None:
    negotiate = storage_only(negotiate_unrestricted)
    requested = [_proposed(1, CT_IMAGE_STORAGE), _proposed(3, VERIFICATION)]
    proposed_roles = None if roles is None else {CT_IMAGE_STORAGE: roles, VERIFICATION: roles}
    results, reply_roles = negotiate(requested, [build_context(VERIFICATION)], proposed_roles)
    storage, verification = results
    assert storage.result == storage_result
    assert str(storage.transfer_syntax[0]) == EXPLICIT_VR_LITTLE_ENDIAN  # the sender's first
    # Verification keeps its default roles, unanswered, in our order of transfer syntaxes.
    assert (verification.result, verification.as_scp) == (0x00, True)
    assert str(verification.transfer_syntax[0]) == IMPLICIT_VR_LITTLE_ENDIAN
    assert [(str(r.sop_class_uid), r.scu_role, r.scp_role) for r in reply_roles] == [
        (CT_IMAGE_STORAGE, scu, scp) for scu, scp in reply
    ]
