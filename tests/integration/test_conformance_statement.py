"""What docs/conformance.md states about negotiation and the network, against the real service:
the asynchronous operations window, SCP/SCU role selection, IPv4 and IPv6.

Negotiation happens before anything is stored, so these run on one backend only (the
backends are compared by every other ingest test).
"""

from __future__ import annotations

import socket
from io import BytesIO
from pathlib import Path

import pytest
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu_items import SCP_SCU_RoleSelectionSubItem
from pynetdicom.pdu_primitives import (
    AsynchronousOperationsWindowNegotiation,
    SCP_SCU_RoleSelectionNegotiation,
)

from gateway.dicom_status import VERIFICATION_SOP_CLASS
from gateway.netdicom.ae import PromptAE
from tests.support.association_requests import (
    association_request,
    first_answer,
    role_selection,
    storage_sop_class,
)
from tests.support.factories import Instance, ct_series, data_set_bytes
from tests.support.ingest import EMBEDDED, Ingest, released

pytestmark = pytest.mark.backends(EMBEDDED)

#: The A-ASSOCIATE-AC PDU type (PS3.8 9.3.3).
A_ASSOCIATE_AC_TYPE = 0x02
#: Presentation context results (PS3.8 9.3.3.2).
ACCEPTANCE, USER_REJECTION = 0x00, 0x01


def _storing_ae(calling: str, instance: Instance) -> PromptAE:
    """A requestor proposing the instance's SOP class in its transfer syntax, and Verification."""
    ae = PromptAE(ae_title=calling)
    ae.add_requested_context(instance.uids.sop_class, [instance.uids.transfer_syntax])
    ae.add_requested_context(VERIFICATION_SOP_CLASS)
    return ae


def _store_whatever_the_roles(ae: PromptAE, assoc: Association, instance: Instance) -> int:
    """C-STORE ``instance`` on its accepted context; the response's status.

    pynetdicom's ``send_c_store`` only sends on a context where the requestor negotiated the
    SCU role, so the request goes to the association's DIMSE provider directly, with the
    reactor held as ``send_c_store`` holds it.
    """
    (context,) = [
        cx for cx in assoc.accepted_contexts if cx.abstract_syntax == instance.uids.sop_class
    ]
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = instance.uids.sop_class
    request.AffectedSOPInstanceUID = instance.uids.sop_instance
    request.Priority = 0x0000
    request.DataSet = BytesIO(data_set_bytes(instance.path))
    assert context.context_id is not None
    with ae.requests_in_a_row(assoc):
        assoc.dimse.send_msg(request, context.context_id)
        _, response = assoc.dimse.get_msg(block=True)
    assert isinstance(response, C_STORE), "no C-STORE response"
    assert response.Status is not None
    return int(response.Status)


def _role(sop_class: str, scu: bool, scp: bool) -> SCP_SCU_RoleSelectionNegotiation:
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = sop_class
    role.scu_role, role.scp_role = scu, scp
    return role


def test_an_asynchronous_operations_window_is_not_answered(ingest: Ingest, inbox: Path) -> None:
    gateway = ingest.start()
    (instance,) = ct_series(inbox, 1)
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 5
    window.maximum_number_operations_performed = 5
    ae = _storing_ae("ASYNC", instance)
    with ingest.events() as events:
        assoc = ae.associate(gateway.host, gateway.port, ae_title="GATEWAY", ext_neg=[window])
        try:
            assert assoc.is_established
            answer = assoc.acceptor.primitive
            assert answer is not None
            # No sub-item in the A-ASSOCIATE-AC: the default window, 1 invoked and 1 performed.
            assert not [
                item
                for item in answer.user_information
                if isinstance(item, AsynchronousOperationsWindowNegotiation)
            ]
            assert assoc.acceptor.asynchronous_operations == (1, 1)
            status = assoc.send_c_store(instance.path)
        finally:
            assoc.release()
            ae.shutdown()
        (message,) = events.wait_for(1)
    assert status.Status == 0x0000
    assert [i.sop_instance_uid for i in released(message).instances] == [instance.uids.sop_instance]


@pytest.mark.parametrize(
    ("scu", "scp"),
    [(True, False), (True, True), (False, True)],
    ids=["scu-only", "scu-and-scp", "scp-only"],
)
def test_role_selection_is_answered_as_proposed_and_c_store_is_served(
    ingest: Ingest, inbox: Path, scu: bool, scp: bool
) -> None:
    gateway = ingest.start()
    (instance,) = ct_series(inbox, 1)
    ae = _storing_ae("ROLES", instance)
    with ingest.events() as events:
        assoc = ae.associate(
            gateway.host,
            gateway.port,
            ae_title="GATEWAY",
            ext_neg=[
                _role(instance.uids.sop_class, scu, scp),
                _role(VERIFICATION_SOP_CLASS, scu, scp),
            ],
        )
        try:
            assert assoc.is_established
            answered = {
                str(uid): (item.scu_role, item.scp_role)
                for uid, item in assoc.acceptor.role_selection.items()
            }
            accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
            status = _store_whatever_the_roles(ae, assoc, instance)
            echo = assoc.send_c_echo()
        finally:
            assoc.release()
            ae.shutdown()
        (message,) = events.wait_for(1)
    # The storage class's roles are answered as proposed; Verification's are not answered
    # (default roles: the gateway is its SCP).
    assert answered == {instance.uids.sop_class: (scu, scp)}
    assert accepted == {instance.uids.sop_class, VERIFICATION_SOP_CLASS}
    assert status == 0x0000  # stored, whatever roles were agreed
    assert [i.sop_instance_uid for i in released(message).instances] == [instance.uids.sop_instance]
    assert echo.Status == 0x0000  # Verification kept its default roles, even for scp-only


def test_a_context_proposed_with_neither_role_is_rejected(ingest: Ingest) -> None:
    gateway = ingest.start()
    request = association_request(
        "GATEWAY",
        "NOROLE",
        contexts=2,
        user_items=role_selection(storage_sop_class(0), scu=False, scp=False),
    )
    answer = first_answer(gateway.host, gateway.port, request, timeout=10)
    assert answer[:1] == bytes([A_ASSOCIATE_AC_TYPE]), f"not an A-ASSOCIATE-AC: {answer[:16]!r}"
    accept = A_ASSOCIATE_AC()
    accept.decode(answer)
    results = {item.context_id: item.result for item in accept.presentation_context}
    assert results == {1: USER_REJECTION, 3: ACCEPTANCE}
    assert accept.user_information is not None
    assert not [
        item
        for item in accept.user_information.user_data
        if isinstance(item, SCP_SCU_RoleSelectionSubItem)
    ]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_listening_on_both_address_families(ingest: Ingest, inbox: Path, workers: int) -> None:
    if not _has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    config = ingest.config(host="::", workers=workers, reject_unknown_sources=True)
    config["sources"] = [
        {"name": "v4", "ae_title": "SENDER4", "host": "127.0.0.1"},
        {"name": "v6", "ae_title": "SENDER6", "host": "::1"},
    ]
    gateway = ingest.start(config)
    first, second = ct_series(inbox, 2)
    with ingest.events() as events:
        for address, calling, instance in (
            ("127.0.0.1", "SENDER4", first),
            ("::1", "SENDER6", second),
        ):
            ae = _storing_ae(calling, instance)
            assoc = ae.associate(address, gateway.port, ae_title="GATEWAY")
            try:
                assert assoc.is_established, f"{calling} over {address} not admitted"
                assert assoc.send_c_store(instance.path).Status == 0x0000
            finally:
                assoc.release()
                ae.shutdown()
        messages = events.wait_for(2)
    # A source's host is matched on either family: an IPv4 sender is named by its IPv4 address.
    assert sorted((released(m).calling_ae_title, released(m).remote_host) for m in messages) == [
        ("SENDER4", "127.0.0.1"),
        ("SENDER6", "::1"),
    ]
    intruder = _storing_ae("SENDER4", first)
    try:
        refused = intruder.associate("::1", gateway.port, ae_title="GATEWAY")
        assert refused.is_rejected
        answer = refused.acceptor.primitive
        assert answer is not None
        assert (answer.result, answer.result_source, answer.diagnostic) == (1, 1, 3)
    finally:
        intruder.shutdown()
