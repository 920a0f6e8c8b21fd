"""The prompt acceptor keeps pynetdicom's behaviour: PDUs, timers, kill, and release.

Real pynetdicom associations over loopback; the gateway's own SCP is tested with dcmtk peers
in the integration tests, which run on this acceptor.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

from gateway.dicom_status import Status
from gateway.netdicom.prompt_dul import (
    FIRST_READ_BYTES,
    PromptAE,
    PromptDIMSE,
    PromptDUL,
    PromptSocket,
    _Waker,
    make_prompt,
    start_acceptor,
)
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


def _reader(connection: socket.socket) -> PromptSocket:
    """Only the reading half of a PromptSocket, on one end of a socket pair."""
    reader = PromptSocket.__new__(PromptSocket)
    reader.socket = connection
    return reader


@pytest.mark.parametrize("size", [300_000, 3 * FIRST_READ_BYTES + 5], ids=["pdu", "large-pdu"])
def test_socket_reads_a_whole_pdu_sent_in_pieces(size: int) -> None:
    ours, peer = socket.socketpair()
    payload = os.urandom(size)

    def send_in_pieces() -> None:
        for start in range(0, len(payload), 7000):
            peer.sendall(payload[start : start + 7000])

    sender = threading.Thread(target=send_in_pieces)
    with ours, peer:
        wrapped = _reader(ours)
        sender.start()
        assert wrapped.recv(len(payload)) == payload
        sender.join()


def test_socket_returns_what_arrived_when_the_peer_closes() -> None:
    ours, peer = socket.socketpair()
    with ours:
        wrapped = _reader(ours)
        peer.sendall(b"abc")
        peer.close()
        assert wrapped.recv(10) == bytearray(b"abc")


def test_readiness_is_seen_on_descriptors_above_select_s_limit() -> None:
    """A gateway with hundreds of associations has descriptors above 1023."""
    ours, peer = socket.socketpair()
    high = socket.socket(fileno=os.dup2(ours.fileno(), 1500))  # needs RLIMIT_NOFILE > 1500
    ours.close()
    with high, peer:
        wrapped = _reader(high)
        wrapped._is_connected = True
        # (Taking it for closed would reach for the association's event queue, which this
        # bare socket has not: the test would fail with an AttributeError.)
        assert not wrapped.ready
        peer.sendall(b"x")
        assert wrapped.ready


def test_an_announced_length_is_not_allocated_before_the_bytes_arrive() -> None:
    """A hostile header may claim 2 GiB; memory follows what was sent, not what was claimed."""
    ours, peer = socket.socketpair()
    with ours:
        wrapped = _reader(ours)
        peer.sendall(b"x" * 64)
        peer.close()
        tracemalloc.start()
        try:
            assert wrapped.recv(0x7FFFFFFF) == bytearray(b"x" * 64)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * FIRST_READ_BYTES


def test_a_wake_up_after_close_writes_nowhere() -> None:
    """The pipe's numbers may already belong to another connection by then."""
    waker = _Waker()
    waker.wake()
    waker.wake()
    waker.drain()
    waker.close()
    reused_read, reused_write = os.pipe()
    try:
        waker.wake()
        os.set_blocking(reused_read, False)
        with pytest.raises(BlockingIOError):
            os.read(reused_read, 1)
    finally:
        os.close(reused_read)
        os.close(reused_write)


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
    acceptor = AE(ae_title="ACCEPTOR")
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


def _read_until_closed(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the test closes the other end
        while connection.recv(65536):
            pass


def test_our_own_sends_do_not_restart_the_network_timer() -> None:
    """As in pynetdicom, only the peer's data counts as activity: a peer that stays silent
    while we send is timed out. (A DUL in state 6, data transfer, on a socket pair.)"""
    ours, peer = socket.socketpair()
    assoc = Association(AE(), MODE_ACCEPTOR)
    assoc.set_socket(AssociationSocket(assoc, client_socket=ours))
    make_prompt(assoc)
    assoc.network_timeout = 0.3
    dul = assoc.dul
    assert dul.event_queue.get_nowait() == "Evt5"  # the accepted connection
    dul.state_machine.current_state = "Sta6"
    drain = threading.Thread(target=_read_until_closed, args=(peer,), daemon=True)
    drain.start()
    dul.start()
    try:
        for _ in range(8):
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((1, b"\x03" + b"x" * 10))
            dul.send_pdu(pdata)
            time.sleep(0.1)  # the point of the test: time passes while only we send
        assert dul.idle_timer_expired()
    finally:
        dul.kill_dul()
        dul.join(5)
        ours.close()
        drain.join(5)
        peer.close()
