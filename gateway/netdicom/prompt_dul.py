"""pynetdicom associations woken by their socket and their queues instead of polling.

pynetdicom runs two threads per association, and both poll: when idle, the DUL thread sleeps
1 ms before looking at its socket and its outgoing queue again, and the association thread
sleeps 1 ms before looking for a decoded DIMSE message. One C-STORE crosses between them
twice (the request to the association thread, its response back), so each instance waited up
to 2 ms for nothing; on the bench's CT series that was about a fifth of ingest's time per
instance (docs/performance.md).

Here, with pynetdicom's own state machine, PDU codec and DIMSE code unchanged:

* the DUL thread waits in ``poll()`` on its socket *and* a wake-up pipe, which the other
  threads write whenever they queue a primitive to send, or kill the DUL;
* an acceptor's association thread waits on the DIMSE message queue rather than sleeping,
  and the DUL wakes it when the peer's release or abort arrives, when it is killed and when
  it ends (a requestor's keeps pynetdicom's: its user pauses that thread for every request
  it sends, and a thread in a longer wait would only be slower to pause);
* the socket reads a PDU with as few ``recv_into`` calls as the kernel allows, where
  pynetdicom reads 4 KiB per call and appends each piece (64 calls for a 256 KiB PDU);
* consecutive fragments of an outgoing data set cross to the DUL thread as one
  :class:`~gateway.netdicom.pdata_run.PDataRun`, already encoded, and leave in one write.

Both waits are bounded by :data:`WAIT_SECONDS` (and the DUL's by the ARTIM timer), so
pynetdicom's timers are still looked at. Two faults of pynetdicom's state machine are also
contained here: a late primitive of ours after the connection ended, and an exception
escaping the DUL thread (see :class:`_EndingTolerantStateMachine` and
:meth:`PromptDUL.run_reactor`).
Acceptors get these classes from :func:`start_acceptor`, requestors from :class:`PromptAE`;
nothing in pynetdicom is patched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import TRANSITION_TABLE, StateMachine
from pynetdicom.transport import (
    AddressInformation,
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from gateway.netdicom.pdata_run import PDataRun, data_set_fragment, is_last
from gateway.netdicom.reactor_hold import HoldableCheckpoint
from gateway.netdicom.store_messages import StoreDIMSE

log = logging.getLogger(__name__)

#: Longest wait of an idle association's two threads before they look at pynetdicom's timers
#: and flags again; everything else they wait for wakes them at once. Short waits cost CPU in
#: proportion to the number of open associations: at 10 ms, 1,000 idle associations woke
#: 200,000 times a second and the service stopped answering.
WAIT_SECONDS = 0.5
#: A PDU's first read buffer; larger PDUs grow it as their bytes arrive. Ingest accepts
#: 256 KiB PDUs by default, so one read usually takes a whole PDU.
FIRST_READ_BYTES = 1024 * 1024
#: Connections the kernel keeps waiting to be accepted (it caps this at ``somaxconn``).
LISTEN_BACKLOG = 1024
#: State 13: the DUL waits for the peer to close; pynetdicom drains the socket there itself.
_CLOSING = "Sta13"
_READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


class _Waker:
    """A pipe another thread writes to interrupt a ``poll()``; one pending byte is enough."""

    def __init__(self) -> None:
        self.fileno, self._write_end = os.pipe()
        os.set_blocking(self.fileno, False)
        os.set_blocking(self._write_end, False)
        # Once closed, the descriptor numbers may belong to another connection: a late
        # wake-up must not write there, hence the lock shared with close().
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            # A full pipe means a wake-up is already pending.
            with contextlib.suppress(BlockingIOError):
                os.write(self._write_end, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):  # empty: every pending wake-up is read
            while os.read(self.fileno, 4096):
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self.fileno)
            os.close(self._write_end)


#: Events that our own side raises by queueing a primitive (PS3.8 9.2.1).
_LOCAL_EVENTS = frozenset({"Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})
#: No connection, or waiting for the peer to close it: nothing can be sent any more.
_ENDED_STATES = frozenset({"Sta1", _CLOSING})
#: The states where a P-DATA request (Evt9) is sent as P-DATA-TF: DT-1 in Sta6, AR-7 in Sta8;
#: neither changes the state.
_SENDS_P_DATA = frozenset({"Sta6", "Sta8"})


class _EndingTolerantStateMachine(StateMachine):
    """pynetdicom's state machine, letting a late primitive of ours pass when it is over.

    When a peer's garbage or abort ends the association while our association thread is still
    answering it (say, accepting the association), our answer reaches the state machine in
    Sta13; pynetdicom raises InvalidEventError for it and its DUL thread dies with the
    connection still open. Dropping the answer is all there is to do. Any other invalid event
    still raises, as in pynetdicom.
    """

    def do_action(self, event: str) -> None:
        state = self.current_state
        if (
            (event, state) not in TRANSITION_TABLE
            and event in _LOCAL_EVENTS
            and state in _ENDED_STATES
        ):
            # The event stands for the primitive at the head of the queue (pynetdicom peeks
            # at it and leaves taking it to the action): take it, or it comes round again.
            with contextlib.suppress(queue.Empty):
                self.dul.to_provider_queue.get(block=False)
            return
        if event == "Evt9" and state in _SENDS_P_DATA and self._next_is_run():
            # DT-1 or AR-7 for PDUs encoded in advance: send them, stay in this state.
            run = cast(PDataRun, self.dul.to_provider_queue.get(block=False))
            if self.dul.socket is not None:
                self.dul.socket.send(run.encoded())
            return
        super().do_action(event)

    def _next_is_run(self) -> bool:
        try:
            return isinstance(self.dul.to_provider_queue.queue[0], PDataRun)
        except IndexError:
            return False


class PromptDUL(DULServiceProvider):
    """A DUL provider that waits for data or for work instead of sleeping between looks."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self.state_machine = _EndingTolerantStateMachine(self)
        # The association thread looks for the peer's release and abort in this queue.
        self.to_user_queue = _NotifyingQueue(self._wake_association)
        # Made when the thread starts and closed when it ends: an association that never
        # starts (AE.associate can fail after making the socket) must not hold a pipe.
        self._waker: _Waker | None = None
        #: True while this thread may be in (or about to enter) its wait; see _is_transport_event.
        self._may_be_waiting = False
        #: Data set fragments collected in the sending thread, not yet queued.
        self._run: PDataRun | None = None
        self._run_lock = threading.Lock()

    def send_pdu(self, primitive: Any) -> None:
        """Queue ``primitive``, collecting a data set's fragments into runs (pdata_run.py).

        A run is queued when its data set's last fragment arrives, when it is full, or before
        any other primitive (an abort from another thread, say), so the order is kept.
        """
        fragment = data_set_fragment(primitive)
        with self._run_lock:
            if fragment is not None:
                run = self._run or PDataRun()
                run.add(*fragment)
                if is_last(fragment[1]) or run.full:
                    self._run = None
                    self._queue(run)
                else:
                    self._run = run
                return
            if self._run is not None:
                self._queue(self._run)
                self._run = None
            self._queue(primitive)

    def _queue(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        # A data set goes out as many PDUs in a row; only a waiting thread needs a wake-up.
        waker = self._waker
        if self._may_be_waiting and waker is not None:
            waker.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        # Without a waker the loop has not begun; it reads the kill flag before any wait.
        waker = self._waker
        if waker is not None:
            waker.wake()
        self._wake_association()

    def run_reactor(self) -> None:
        self._waker = _Waker()
        try:
            super().run_reactor()
        except Exception as exc:  # noqa: BLE001 (the thread's boundary: see below)
            # pynetdicom lets some errors escape its state machine (a peer's request with an
            # even presentation context ID, say); its thread would die with the connection
            # still open and the peer waiting for an answer that never comes.
            log.warning(
                "connection ended: pynetdicom could not handle the peer's data: %s: %s",
                type(exc).__name__,
                exc,
            )
            self._end_connection()
        finally:
            self._waker.close()
            self._wake_association()  # it checks whether this thread still runs

    def _end_connection(self) -> None:
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        if self.socket is not None:
            self.socket.close()

    def _wake_association(self) -> None:
        dimse = getattr(self.assoc, "dimse", None)
        if isinstance(dimse, PromptDIMSE):
            dimse.wake()

    def _is_transport_event(self) -> bool:
        """Wait until the peer sent data or our user queued a primitive, then act on it.

        pynetdicom calls this once per loop when there is nothing of ours to send. ``True``
        means the peer's data was read (pynetdicom then restarts its network timer); after a
        wake-up for our own primitive its event is queued and ``False`` is returned, so the
        timer keeps measuring the peer's silence, as in pynetdicom.
        """
        waker = self._waker
        # The flag goes up before the queues are looked at: a primitive queued after the look
        # sees it and wakes us, one queued before it is found by the look.
        self._may_be_waiting = True
        try:
            if waker is not None and self._may_wait():
                readable = self._wait(waker)
                if waker.fileno in readable:
                    waker.drain()
                    if self._process_recv_primitive():
                        return False
        finally:
            self._may_be_waiting = False
        return bool(super()._is_transport_event())

    def _may_wait(self) -> bool:
        sock = getattr(self.socket, "socket", None)
        if sock is None or self._kill_thread or not getattr(self.socket, "_is_connected", False):
            return False
        if self.state_machine.current_state == _CLOSING:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False  # decrypted bytes wait in the TLS layer, invisible to poll()
        return self.to_provider_queue.empty() and self.event_queue.empty()

    def _wait(self, waker: _Waker) -> set[int]:
        sock = getattr(self.socket, "socket", None)
        if sock is None:
            return set()
        poller = select.poll()
        try:
            poller.register(sock, _READABLE)
        except (OSError, ValueError):
            return set()  # closed under us: pynetdicom's own check reports it
        poller.register(waker.fileno, select.POLLIN)
        # The ARTIM timer (a peer that sends no request, or does not close) runs here.
        timeout = WAIT_SECONDS
        if self.artim_timer._start_time is not None:
            timeout = max(0.0, min(timeout, self.artim_timer.remaining))
        return {fd for fd, _ in poller.poll(timeout * 1000)}


class _NotifyingQueue(queue.Queue[Any]):
    """A queue that calls ``on_put`` after each put."""

    def __init__(self, on_put: Callable[[], None]) -> None:
        super().__init__()
        self._on_put = on_put

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._on_put()


#: Put on the DIMSE message queue to end the association thread's wait without a message.
#: Made at run time so that it is not the same object as any ``(None, None)`` constant,
#: such as what pynetdicom returns when its own wait times out.
_WAKE: tuple[None, None] = tuple([None, None])  # type: ignore[assignment]


class PromptDIMSE(StoreDIMSE):
    """The association thread waits on the message queue instead of sleeping (and C-STORE
    responses are encoded directly: gateway/netdicom/store_messages.py).

    Besides messages, the DUL wakes it (:meth:`wake`) when the peer's release or abort
    arrives, when the DUL is killed and when it ends; its timers (the network timeout) are
    looked at after :data:`WAIT_SECONDS` at the latest.
    """

    def wake(self) -> None:
        self.msg_queue.put(_WAKE)

    def get_msg(self, block: bool = False) -> Any:
        if block:
            while True:
                message = super().get_msg(block=True)
                if message is not _WAKE:
                    return message
        # pynetdicom's reactor asks without blocking, once per loop; waiting here (bounded)
        # hands it a message as soon as the DUL thread has decoded one.
        try:
            return self.msg_queue.get(timeout=WAIT_SECONDS)
        except queue.Empty:
            return None, None


class PromptSocket(AssociationSocket):
    """A connection that reads each PDU into one buffer, and asks ``poll()`` whether data is
    waiting."""

    @property
    def ready(self) -> bool:
        """pynetdicom's check, with ``poll()`` where pynetdicom uses ``select()``.

        ``select()`` refuses descriptors above 1023, which a gateway serving hundreds of
        associations reaches; pynetdicom then takes the connection for closed (Evt17).
        """
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        # An SSLSocket may hold decrypted bytes that poll() cannot see (as pynetdicom says).
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        poller = select.poll()
        try:
            poller.register(sock, _READABLE)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed
            return False

    def _shutdown_socket(self) -> None:
        """pynetdicom's, except that the socket is closed even when ``shutdown()`` fails, as it
        does for a connection never made (refused, or a failed TLS handshake): pynetdicom
        then left the descriptor open until garbage collection."""
        sock = self.socket
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def send(self, bytestream: bytes) -> None:
        """pynetdicom's, with the rest of a partial write taken as a view, not a copy (a run of
        PDUs is 256 KiB)."""
        sock = self.socket
        if sock is None:
            self.event_queue.put("Evt17")  # closed already: as pynetdicom's send fails then
            return
        try:
            with memoryview(bytestream) as view:
                sent = 0
                while sent < len(view):
                    sent += sock.send(view[sent:])
            evt.trigger(self.assoc, evt.EVT_DATA_SENT, {"data": bytestream})
        except OSError:
            self.event_queue.put("Evt17")  # transport connection closed

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes``, or fewer if the peer closed the connection (as pynetdicom).

        Room is made as data arrives, never for the length a peer announced: a PDU header may
        claim 4 GiB and be followed by nothing.
        """
        data = bytearray(min(nr_bytes, FIRST_READ_BYTES))
        received = 0
        sock = self.socket
        while sock is not None and received < nr_bytes:
            if received == len(data):
                data += bytes(min(nr_bytes, 2 * len(data)) - len(data))
            with memoryview(data) as view:
                count = sock.recv_into(view[received:])
            if count == 0:
                break
            received += count
        del data[received:]
        return data


def _reset_timers(assoc: Association) -> None:
    """The association set its timers on the DUL it made first; set them on the new one."""
    assoc.acse_timeout = assoc.acse_timeout
    assoc.network_timeout = assoc.network_timeout


def make_prompt(assoc: Association) -> None:
    """Give a not yet started acceptor association the prompt DUL, DIMSE and socket.

    pynetdicom's request handler made the association with its own providers; they have
    not run yet, so they are replaced, and the connection is wrapped again so that its
    "transport connection indication" (Evt5) reaches the new DUL's event queue.
    """
    connection = getattr(assoc.dul.socket, "socket", None)
    if connection is None:  # not an accepted connection: leave pynetdicom's own providers
        return
    assoc.dul = PromptDUL(assoc)
    assoc.dimse = PromptDIMSE(assoc)
    assoc.dul.socket = PromptSocket(assoc, client_socket=connection)
    _reset_timers(assoc)


class PromptAE(AE):
    """An AE whose requested associations get the prompt DUL and socket, C-STORE requests
    encoded directly (gateway/netdicom/store_messages.py), and a reactor checkpoint that can be held
    across a batch of requests (gateway/netdicom/reactor_hold.py).

    ``AE.associate`` makes the association, then asks this method for its socket before
    anything has started: the one place to give it other providers without redoing
    ``associate``.
    """

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[ssl.SSLContext, str] | None,
    ) -> AssociationSocket:
        assoc.dul = PromptDUL(assoc)
        assoc.dimse = StoreDIMSE(assoc)
        assoc._reactor_checkpoint = HoldableCheckpoint()
        _reset_timers(assoc)
        sock = PromptSocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock


_Server = TypeVar("_Server", bound=ThreadedAssociationServer)


class PromptRequestHandler(RequestHandler):
    """pynetdicom's request handler, with :func:`make_prompt` applied to each association."""

    association: Association | None = None

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        make_prompt(assoc)
        self.association = assoc
        return assoc


def make_acceptor(
    ae: AE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    server_class: type[_Server],
    **server_arguments: Any,
) -> _Server:
    """``ae.make_server(...)`` with :class:`PromptRequestHandler`, registered with the AE as
    ``start_server`` does (the server's ``shutdown()`` takes itself off that list).

    ``server_arguments`` go to ``server_class`` with pynetdicom's own.
    """
    server = cast(
        _Server,
        ae.make_server(
            address,
            evt_handlers=evt_handlers,
            server_class=server_class,
            request_handler=PromptRequestHandler,
            **server_arguments,
        ),
    )
    ae._servers.append(server)
    return server


def wrap_accepted(context: ssl.SSLContext | None, connection: socket.socket) -> socket.socket:
    """An accepted connection, with TLS if ``context``; the handshake is left to its first read.

    That read happens on the connection's own thread. pynetdicom shakes hands in the thread
    that accepts, so one peer that never finishes its handshake stopped every other one.
    """
    if context is None:
        return connection
    return context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)


class _ListeningServer(ThreadedAssociationServer):
    # socketserver's default of 5 waiting connections makes the kernel drop the SYNs of a
    # burst of senders, who then wait a second or more to retry.
    request_queue_size = LISTEN_BACKLOG

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None  # listening
        connection, address = self.socket.accept()
        return wrap_accepted(self.ssl_context, connection), address


def start_acceptor(
    ae: AE,
    address: tuple[str, int],
    evt_handlers: list[Any],
    ssl_context: ssl.SSLContext | None = None,
) -> ThreadedAssociationServer:
    """``ae.start_server(address, block=False, ...)`` with :class:`PromptRequestHandler`."""
    server = make_acceptor(ae, address, evt_handlers, _ListeningServer, ssl_context=ssl_context)
    name = f"AcceptorServer@{datetime.now():%Y%m%d%H%M%S}"
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server
