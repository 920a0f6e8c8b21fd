"""The prompt DUL: pynetdicom's upper-layer thread, waiting in ``poll()`` instead of sleeping.

pynetdicom's DUL thread, when idle, sleeps 1 ms before it looks at its socket and its outgoing
queue again, so every message that crosses to it or arrives waits for nothing. Here, with
pynetdicom's state machine and PDU codec unchanged, the thread waits in ``poll()`` on its
socket *and* a wake-up pipe, which the other threads write whenever they queue a primitive to
send or kill the DUL. The wait is bounded by :data:`WAIT_SECONDS` (and by the ARTIM timer), so
pynetdicom's timers are still looked at.

Consecutive fragments of an outgoing data set reach the thread as one
:class:`~gateway.netdicom.pdata_run.PDataRun`, already encoded, and leave in one write.

Two faults of pynetdicom's state machine are contained here as well: a late primitive of ours
after the connection ended (:class:`_EndingTolerantStateMachine`), and an exception escaping
the thread (:meth:`PromptDUL.run_reactor`). An acceptor given a
:class:`~gateway.netdicom.request_limits.RequestLimit` refuses a connection's first PDU before
pynetdicom decodes it when it is too long or proposes too many presentation contexts
(:meth:`PromptDUL._read_request`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import ssl
import threading
from collections.abc import Callable
from typing import Any, cast

from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import TRANSITION_TABLE, StateMachine

from gateway.netdicom.direct_store import Context, DirectStore, StoreReceiver, Verdict
from gateway.netdicom.pdata_run import PDataRun, TakesRuns, data_set_fragment, is_last
from gateway.netdicom.prompt_socket import READABLE
from gateway.netdicom.request_limits import (
    P_DATA_TF,
    PDU_HEADER,
    Refusal,
    RequestLimit,
    body_refusal,
    header_refusal,
    over_negotiated_length,
    refuse,
)
from gateway.netdicom.store_messages import command_pdus
from gateway.netdicom.wakeups import NotifyingQueue, Waker, nobody

log = logging.getLogger(__name__)

#: Longest wait of an idle association's two threads before they look at pynetdicom's timers
#: and flags again; everything else they wait for wakes them at once. Short waits cost CPU in
#: proportion to the number of open associations (docs/reliability.md: a thousand idle
#: associations at 10 ms stopped the service).
WAIT_SECONDS = 0.5
#: State 13: the DUL waits for the peer to close; pynetdicom drains the socket there itself.
_CLOSING = "Sta13"
#: The event a PDU taken by the fast path leaves for pynetdicom's loop: it does nothing.
TAKEN_BY_FAST_PATH = "EvtTakenByFastPath"
#: Established: P-DATA flows both ways (PS3.8 9.2).
_ESTABLISHED = "Sta6"
#: The PDU types of PS3.8 9.3; any other is an unrecognised PDU (Evt19).
_PDU_TYPES = frozenset(range(0x01, 0x08))
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
        if event == TAKEN_BY_FAST_PATH:
            return
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


class PromptDUL(DULServiceProvider, TakesRuns):
    """A DUL provider that waits for data or for work instead of sleeping between looks."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self.state_machine = _EndingTolerantStateMachine(self)
        #: Called when the association thread has something to look at: the peer's release
        #: or abort, a kill, this thread's end. An acceptor's waiting DIMSE provider sets it
        #: (gateway/netdicom/ae.py).
        self.wake_user: Callable[[], None] = nobody
        # The association thread looks for the peer's release and abort in this queue.
        self.to_user_queue = NotifyingQueue(self._notify_user)
        # Made when the thread starts and closed when it ends: an association that never
        # starts (AE.associate can fail after making the socket) must not hold a pipe.
        self._waker: Waker | None = None
        #: True while this thread may be in (or about to enter) its wait; see _is_transport_event.
        self._may_be_waiting = False
        #: Data set fragments collected in the sending thread, not yet queued.
        self._run: PDataRun | None = None
        self._run_lock = threading.Lock()
        #: The C-STORE fast path, once the user armed it (:meth:`enable_direct_store`).
        self.direct_store: DirectStore | None = None
        #: What an acceptor refuses to decode as its first PDU (None: anything, as pynetdicom).
        self.request_limit: RequestLimit | None = None
        # The first PDU can arrive before the state machine has taken the connection (state 2):
        # what tells it apart is that none was read before.
        self._first_pdu_read = False

    def enable_direct_store(self, receiver: StoreReceiver) -> None:
        """Read this association's C-STORE requests on this thread (direct_store.py) and give
        their data sets to ``receiver``. Called before the association is established."""
        self.direct_store = DirectStore(receiver, self._accepted_context, self._send_command)

    def _accepted_context(self, context_id: int) -> Context | None:
        context = self.assoc._accepted_cx.get(context_id)
        if context is None or context.abstract_syntax is None or not context.transfer_syntax:
            return None
        return Context(str(context.abstract_syntax), str(context.transfer_syntax[0]))

    def _send_command(self, context_id: int, command: bytes) -> None:
        if self.socket is not None:
            self.socket.send(command_pdus(context_id, command, self.assoc.dimse.maximum_pdu_size))

    def _read_pdu_data(self) -> None:
        """pynetdicom's, with P-DATA-TF PDUs offered to the C-STORE fast path first.

        The PDU is read as pynetdicom reads it, with the same events for a connection that
        ends and for an unknown PDU type; what the fast path does not take is decoded by
        pynetdicom from the same bytes, so its state machine sees what it always saw.
        """
        limit = self.request_limit
        if limit is not None and not self._first_pdu_read:
            self._first_pdu_read = True
            self._read_request(limit)
            return
        direct = self.direct_store
        if direct is None or self.socket is None:
            super()._read_pdu_data()
            return
        try:
            header = self.socket.recv(PDU_HEADER.size)
            if len(header) < PDU_HEADER.size:
                self._connection_ended(direct)
                return
            pdu_type, _, length = PDU_HEADER.unpack(header)
            if pdu_type not in _PDU_TYPES:
                log.warning("unknown PDU type 0x%02X received", pdu_type)
                direct.discard()
                self.event_queue.put("Evt19")  # unrecognised PDU
                return
            announced = self.assoc.acceptor.maximum_length or 0
            if over_negotiated_length(pdu_type, length, announced):
                # Read whole, such a PDU would sit in memory for as long as its sender
                # trickles it: the peer broke what it accepted, and is aborted unread.
                log.warning(
                    "P-DATA-TF PDU of %d bytes, over the %d negotiated: association aborted",
                    length,
                    announced,
                )
                direct.discard()
                self.event_queue.put("Evt19")  # invalid PDU: A-ABORT
                return
            body = self.socket.recv(length)
        except OSError:
            self._connection_ended(direct)
            return
        if len(body) < length:
            self._connection_ended(direct)
            return
        if pdu_type == P_DATA_TF:
            may_begin = (
                self.state_machine.current_state == _ESTABLISHED
                and self.assoc.dimse.message is None
            )
            with memoryview(body) as view:
                verdict = direct.feed(view, may_begin)
            if verdict is Verdict.TAKEN:
                # Without an event pynetdicom's loop would sleep before it looks again (and,
                # in a busy process, wait for the GIL after it), once per PDU.
                self.event_queue.put(TAKEN_BY_FAST_PATH)
                return
            if verdict is Verdict.BROKEN:
                self.event_queue.put("Evt19")  # invalid PDU: A-ABORT, as for a broken message
                return
        else:
            direct.discard()  # a release or an abort in the middle of a data set
        self._decode(header + body)

    def _read_request(self, limit: RequestLimit) -> None:
        """The connection's first PDU: refused when ``limit`` says so (request_limits.py), else
        read and decoded as pynetdicom does, with the same events."""
        connection = self.socket
        if connection is None:
            super()._read_pdu_data()
            return
        try:
            header = connection.recv(PDU_HEADER.size)
            if len(header) < PDU_HEADER.size:
                self.event_queue.put("Evt17")  # transport connection closed
                return
            pdu_type, _, length = PDU_HEADER.unpack(header)
            if pdu_type not in _PDU_TYPES:
                log.warning("unknown PDU type 0x%02X received", pdu_type)
                self.event_queue.put("Evt19")  # unrecognised PDU
                return
            refusal = header_refusal(length, limit.max_bytes)
            body = bytearray() if refusal is not None else connection.recv(length)
        except OSError:
            self.event_queue.put("Evt17")
            return
        if refusal is None:
            if len(body) < length:
                self.event_queue.put("Evt17")
                return
            refusal = body_refusal(pdu_type, body)
        if refusal is None:
            self._decode(header + body)
            return
        self._refuse(limit, refusal, PDU_HEADER.size + length, length - len(body))

    def _refuse(self, limit: RequestLimit, refusal: Refusal, size: int, unread: int) -> None:
        """Answer the refused first PDU with an A-ASSOCIATE-RJ and end the connection: here,
        as pynetdicom rejects only a request it decoded (state 3). The connection is closed as
        if the peer had closed it before its request (AA-5, state 1), and the association
        thread, told there is no request, ends both threads once that state is reached."""
        connection = self.socket
        peer = self.assoc.requestor
        raw = None if connection is None else connection.socket
        refuse(raw, f"{peer.address}:{peer.port}", limit, refusal, size=size, unread=unread)
        if connection is not None:
            connection.close()  # Evt17
        self.to_user_queue.put(None)  # what the association thread gets when no request came

    def _connection_ended(self, direct: DirectStore) -> None:
        direct.discard()
        self.event_queue.put("Evt17")  # transport connection closed

    def _decode(self, pdu_bytes: bytearray) -> None:
        """What pynetdicom does with a PDU it has read."""
        try:
            pdu, event = self._decode_pdu(pdu_bytes)
        except Exception as exc:  # noqa: BLE001 (as pynetdicom: any decoding failure is Evt19)
            log.warning("cannot decode the received PDU: %s: %s", type(exc).__name__, exc)
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _notify_user(self) -> None:
        self.wake_user()  # looked up at each call: it is set after this DUL is made

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
        self.wake_user()

    def run_reactor(self) -> None:
        self._waker = Waker()
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
            if self.direct_store is not None:
                self.direct_store.discard()
            self._waker.close()
            self.wake_user()  # it checks whether this thread still runs

    def _end_connection(self) -> None:
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        if self.socket is not None:
            self.socket.close()

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
        # Attributes read directly, never with a default: one renamed by a new pynetdicom must
        # fail loudly here, not turn this thread back into a poller (compat.py checks them).
        connection = self.socket
        if connection is None or connection.socket is None or self._kill_thread:
            return False
        if not connection._is_connected or self.state_machine.current_state == _CLOSING:
            return False
        sock = connection.socket
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False  # decrypted bytes wait in the TLS layer, invisible to poll()
        return self.to_provider_queue.empty() and self.event_queue.empty()

    def _wait(self, waker: Waker) -> set[int]:
        sock = None if self.socket is None else self.socket.socket
        if sock is None:
            return set()
        poller = select.poll()
        try:
            poller.register(sock, READABLE)
        except (OSError, ValueError):
            return set()  # closed under us: pynetdicom's own check reports it
        poller.register(waker.fileno, select.POLLIN)
        # The ARTIM timer (a peer that sends no request, or does not close) runs here.
        timeout = WAIT_SECONDS
        if self.artim_timer._start_time is not None:
            timeout = max(0.0, min(timeout, self.artim_timer.remaining))
        return {fd for fd, _ in poller.poll(timeout * 1000)}
