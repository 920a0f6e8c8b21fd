"""Associations of the gateway's AEs keep pynetdicom's behaviour: PDUs, timers, kill, release
and TLS; and on an established association the fast path is the one in use: the prompt threads
wait instead of polling, and the outgoing queue is bounded. Plain mode's associations run on
pynetdicom's own providers.

Real pynetdicom associations over loopback; the gateway's own SCP is tested with dcmtk peers
in the integration tests, which run on this acceptor.
"""

from __future__ import annotations

import gc
import os
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import CodeType

import pytest
from pynetdicom import AE, evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

from gateway.dicom_status import Status
from gateway.netdicom import backpressure
from gateway.netdicom.acceptor import start_acceptor
from gateway.netdicom.ae import PlainAE, PromptAE
from gateway.netdicom.backpressure import BoundedProviderQueue
from gateway.netdicom.prompt_dimse import PromptDIMSE
from gateway.netdicom.prompt_dul import PromptDUL
from gateway.netdicom.prompt_socket import PromptSocket
from gateway_client.testing import wait_until
from tests.support import loopback
from tests.support.factories import ct_series
from tests.support.loopback import CT_IMAGE_STORAGE, EXPLICIT_VR_LITTLE_ENDIAN
from tests.support.pki import self_signed


@pytest.fixture
def acceptor() -> Iterator[tuple[ThreadedAssociationServer, list[object], int]]:
    """An acceptor for echo and CT storage that records what each association ran on."""
    seen: list[object] = []

    def on_store(event: evt.Event) -> int:
        assoc = event.assoc
        seen.extend([type(assoc.dul), type(assoc.dimse), type(assoc.dul.socket)])
        seen.append(event.dataset.SOPInstanceUID)
        return Status.SUCCESS

    handlers = [(evt.EVT_C_ECHO, lambda _event: Status.SUCCESS), (evt.EVT_C_STORE, on_store)]
    with loopback.acceptor(handlers, network_timeout=0.5) as server:
        yield server, seen, server.server_address[1]


def _requestor() -> AE:
    return loopback.requestor(AE())


def test_stores_over_many_pdus_on_the_prompt_providers(
    acceptor: tuple[ThreadedAssociationServer, list[object], int], tmp_path: Path
) -> None:
    _server, seen, port = acceptor
    instances = ct_series(tmp_path, 3, rows=128, cols=128)  # 32 KiB of pixels: 3+ PDUs each
    assoc = _requestor().associate("127.0.0.1", port, ae_title="ACCEPTOR")
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(instance.path).Status) for instance in instances]
    assoc.release()
    assert statuses == [Status.SUCCESS] * 3
    assert seen[:3] == [PromptDUL, PromptDIMSE, PromptSocket]
    assert seen[3::4] == [instance.uids.sop_instance for instance in instances]


def test_many_short_associations_in_a_row_are_all_released(
    acceptor: tuple[ThreadedAssociationServer, list[object], int],
) -> None:
    _server, _seen, port = acceptor
    ae = _requestor()
    for _ in range(20):
        assoc = ae.associate("127.0.0.1", port, ae_title="ACCEPTOR")
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == Status.SUCCESS
        assoc.release()
        assert assoc.is_released


def test_network_timeout_still_ends_an_idle_association(
    acceptor: tuple[ThreadedAssociationServer, list[object], int],
) -> None:
    """The timers set by the AE reach the prompt DUL (0.5 s here, pynetdicom's default 60)."""
    server, _seen, port = acceptor
    assoc = _requestor().associate("127.0.0.1", port, ae_title="ACCEPTOR")
    assert assoc.is_established
    wait_until(
        lambda: not assoc.is_established, timeout=10, description="the idle association to end"
    )
    assert assoc.is_aborted
    wait_until(
        lambda: not server.active_associations, timeout=10, description="the acceptor to clean up"
    )


def test_an_abort_from_our_side_reaches_the_peer(
    acceptor: tuple[ThreadedAssociationServer, list[object], int],
) -> None:
    server, _seen, port = acceptor
    assoc = _requestor().associate("127.0.0.1", port, ae_title="ACCEPTOR")
    assert assoc.is_established
    [accepted] = server.active_associations
    accepted.abort()
    wait_until(lambda: not accepted.is_alive(), timeout=5, description="the acceptor thread to end")
    wait_until(
        lambda: not assoc.is_established, timeout=5, description="the requestor to see the abort"
    )


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """(key, certificate) of a self-signed certificate for localhost."""
    cert, key = self_signed(tmp_path)
    return key, cert


def test_tls_on_both_sides_carries_data_sets_over_many_records(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    """TLS hands over 16 KiB records: decrypted bytes wait inside the TLS layer, where poll()
    does not see them, and the prompt DUL must still read them (here with both sides prompt)."""
    key, cert = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    stored: list[str] = []
    acceptor = PromptAE(ae_title="ACCEPTOR")
    acceptor.add_supported_context(CT_IMAGE_STORAGE, EXPLICIT_VR_LITTLE_ENDIAN)

    def on_store(event: evt.Event) -> int:
        stored.append(str(event.dataset.SOPInstanceUID))
        return Status.SUCCESS

    server = start_acceptor(
        acceptor, ("127.0.0.1", 0), [(evt.EVT_C_STORE, on_store)], ssl_context=server_context
    )
    try:
        requestor = PromptAE(ae_title="REQUESTOR")
        requestor.add_requested_context(CT_IMAGE_STORAGE, EXPLICIT_VR_LITTLE_ENDIAN)
        instances = ct_series(tmp_path, 3, rows=256, cols=256)  # 128 KiB of pixels each
        assoc = requestor.associate(
            "127.0.0.1",
            server.server_address[1],
            ae_title="ACCEPTOR",
            tls_args=(client_context, "localhost"),
        )
        assert assoc.is_established
        assert isinstance(assoc.dul, PromptDUL)
        statuses = [int(assoc.send_c_store(i.path).Status) for i in instances]
        assoc.release()
    finally:
        server.shutdown()
    assert statuses == [Status.SUCCESS] * 3
    assert stored == [i.uids.sop_instance for i in instances]


def _open_descriptors() -> int:
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


# pynetdicom leaves a failed request's unconnected socket to the garbage collector, which
# closes it with a ResourceWarning; that socket is pynetdicom's, and not what is counted here.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_request_that_fails_before_it_starts_leaves_no_descriptor_open() -> None:
    """AE.associate makes the socket, then may refuse (here: no presentation context)."""
    ae = PromptAE(ae_title="REQUESTOR")
    before = _open_descriptors()
    for _ in range(20):
        with pytest.raises(RuntimeError):
            ae.associate("127.0.0.1", 9, ae_title="NOBODY")
    assert _open_descriptors() - before <= 2


# --- the fast path in use on an established association -------------------------------------

#: Samples of a thread's stack, a few milliseconds apart.
SAMPLES = 40


def _stack(thread: threading.Thread) -> set[CodeType]:
    """The code objects on ``thread``'s stack right now."""
    frame = sys._current_frames().get(thread.ident or -1)
    codes = set()
    while frame is not None:
        codes.add(frame.f_code)
        frame = frame.f_back
    return codes


def _share_of_time_in(thread: threading.Thread, code: CodeType) -> float:
    """How often ``thread`` was found inside ``code``."""
    found = 0
    for _ in range(SAMPLES):
        found += code in _stack(thread)
        time.sleep(0.005)
    return found / SAMPLES


def test_an_idle_prompt_association_waits_in_poll_on_both_sides(tmp_path: Path) -> None:
    """Both DUL threads wait in poll() and the acceptor's association thread on its message
    queue: a prompt DUL that fell back to pynetdicom's 1 ms polling (a renamed attribute, say)
    would be found sleeping in pynetdicom's loop instead, with every other test still green."""
    handlers = [(evt.EVT_C_STORE, lambda _event: Status.SUCCESS)]
    with loopback.acceptor(handlers) as server:
        ae = loopback.requestor(PromptAE())
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="ACCEPTOR")
        assert assoc.is_established
        try:
            with ae.requests_in_a_row(assoc):
                for instance in ct_series(tmp_path, 2, rows=64, cols=64):
                    assert int(assoc.send_c_store(instance.path).Status) == Status.SUCCESS
            [accepted] = server.active_associations
            assert isinstance(assoc.dul, PromptDUL)
            assert isinstance(accepted.dul, PromptDUL)
            assert isinstance(accepted.dimse, PromptDIMSE)
            assert _share_of_time_in(assoc.dul, PromptDUL._wait.__code__) > 0.8
            assert _share_of_time_in(accepted.dul, PromptDUL._wait.__code__) > 0.8
            assert _share_of_time_in(accepted, PromptDIMSE.get_msg.__code__) > 0.8
        finally:
            assoc.release()


@pytest.mark.parametrize("ae_class", [PromptAE, PlainAE], ids=["prompt", "plain"])
def test_an_established_association_sends_through_its_bounded_queue(
    ae_class: type[PromptAE | PlainAE], tmp_path: Path
) -> None:
    """What export does after the association is established, in either mode: the bounded
    queue replaces the DUL's, and the data sets that follow go through it."""
    stored: list[str] = []

    def on_store(event: evt.Event) -> int:
        stored.append(str(event.dataset.SOPInstanceUID))
        return Status.SUCCESS

    instances = ct_series(tmp_path, 3, rows=256, cols=256)  # 128 KiB each: 8+ PDUs of 16 KiB
    with loopback.acceptor([(evt.EVT_C_STORE, on_store)], ae_class=ae_class) as server:
        ae = loopback.requestor(ae_class())
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="ACCEPTOR")
        assert assoc.is_established
        backpressure.install(assoc)
        assert isinstance(assoc.dul.to_provider_queue, BoundedProviderQueue)
        with ae.requests_in_a_row(assoc):
            statuses = [int(assoc.send_c_store(i.path).Status) for i in instances]
        assoc.release()
    assert statuses == [Status.SUCCESS] * 3
    assert stored == [i.uids.sop_instance for i in instances]


def test_plain_associations_run_on_pynetdicom_s_own_providers(tmp_path: Path) -> None:
    seen: list[object] = []

    def on_store(event: evt.Event) -> int:
        assoc = event.assoc
        seen.extend([type(assoc.dul), type(assoc.dimse), type(assoc.dul.socket)])
        return Status.SUCCESS

    with loopback.acceptor([(evt.EVT_C_STORE, on_store)], ae_class=PlainAE) as server:
        ae = loopback.requestor(PlainAE())
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="ACCEPTOR")
        assert assoc.is_established
        requested = [type(assoc.dul), type(assoc.dimse), type(assoc.dul.socket)]
        [instance] = ct_series(tmp_path, 1, rows=64, cols=64)
        assert int(assoc.send_c_store(instance.path).Status) == Status.SUCCESS
        assoc.release()
    pynetdicom_s = [DULServiceProvider, DIMSEServiceProvider, AssociationSocket]
    assert requested == pynetdicom_s
    assert seen == pynetdicom_s
