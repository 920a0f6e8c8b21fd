"""Ingest's worker processes, seen from the parent: start them, feed them, replace them.

With ``ingest.workers`` above 1, associations are received by that many processes
(:mod:`ingest.workers.child`), so that concurrent associations use more than one core. The parent
accepts every connection and hands it to the worker with the fewest open connections (see
:mod:`ingest.listener` for why). It keeps what there is one of: the journal's recovery at
start, the uploader, the event relay, spool maintenance and ``/metrics``.

The association limit stays global: each worker admits in a journal transaction that counts
every open association (:meth:`~ingest.journal.Journal.begin_association`). When a worker
ends, for whatever reason, its open associations end as after a crash
(:mod:`ingest.ownership`): aborted (their peers' connections closed with the process), releases
it had recorded handed on, and a new worker takes its place.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gateway.errors import GatewayError, JournalError, WorkerMessageError
from gateway.metrics import ListenerCounters
from gateway.settings import GatewaySettings
from ingest.associations import StorageSink
from ingest.ownership import Ownership
from ingest.workers.channel import hand_over
from ingest.workers.messages import (
    Aborted,
    Closed,
    CounterMoved,
    Ready,
    Released,
    Spooled,
    WorkerStart,
    decode,
)

log = logging.getLogger(__name__)

#: How long a worker may take from start to accepting associations.
START_TIMEOUT_SECONDS = 30.0
#: How long after the grace period a stopping worker is waited for before it is killed.
STOP_MARGIN_SECONDS = 10.0
#: A worker that ends within this time of its start has ended young (see restart_delay).
SHORT_LIFE_SECONDS = 10.0
#: Delays before a young worker is replaced, by how many ended young in a row: one crash is
#: replaced at once, so its slot is not missed for long; a worker that cannot run does not spin.
RESTART_DELAYS_SECONDS = (0.0, 1.0, 2.0, 5.0)


#: How often the accepting thread looks whether it should stop.
ACCEPT_POLL_SECONDS = 0.5
#: How long a connection may wait for a worker with room for it before it is closed.
HAND_OVER_SECONDS = 30.0
#: How often it looks for associations of ended workers that are still open in the journal.
SETTLE_SECONDS = 10.0


def restart_delay(young_ends_in_a_row: int) -> float:
    """How long to wait before replacing a worker, given how many workers of its slot in a row
    (itself included) ended within :data:`SHORT_LIFE_SECONDS` of their start."""
    if young_ends_in_a_row <= 0:
        return 0.0
    return RESTART_DELAYS_SECONDS[min(young_ends_in_a_row, len(RESTART_DELAYS_SECONDS)) - 1]


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    young_ends: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    #: The parent's end of the socket pair while the worker runs; guarded by the pool's lock.
    channel: socket.socket | None = None
    #: Connections handed over and not yet closed; guarded by the pool's lock.
    connections: int = 0


class WorkerPool:
    def __init__(
        self,
        settings: GatewaySettings,
        listening: socket.socket,
        ownership: Ownership,
        storage: StorageSink,
        counters: ListenerCounters,
    ) -> None:
        self._settings = settings
        self._listening = listening
        self._ownership = ownership
        self._storage = storage
        self._counters = counters
        self._log_level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._slots = [_Slot(i) for i in range(settings.ingest.workers)]
        self._accepting = threading.Thread(target=self._accept, name="ingest-accept")

    def start(self) -> None:
        """Start every worker and wait until each accepts; raises :class:`GatewayError`."""
        for slot in self._slots:
            slot.thread = threading.Thread(
                target=self._supervise, args=(slot,), name=f"ingest-worker-{slot.index}"
            )
            slot.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        for slot in self._slots:
            if not slot.ready.wait(max(0.0, deadline - time.monotonic())):
                raise GatewayError(
                    f"ingest worker {slot.index} did not start within {START_TIMEOUT_SECONDS:g} s"
                )
        self._accepting.start()

    def running(self) -> int:
        """Workers that are accepting associations now."""
        return sum(
            1
            for slot in self._slots
            if slot.ready.is_set() and slot.process is not None and slot.process.poll() is None
        )

    def stop(self, grace_seconds: float) -> None:
        """Stop accepting, SIGTERM every worker (each has the grace period), kill what
        outlives it."""
        self._stopping.set()
        if self._accepting.is_alive():
            self._accepting.join()
        # Connections that arrive from now on are refused at once rather than completed by
        # the kernel into the backlog and reset when the process ends.
        self._listening.close()
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds + STOP_MARGIN_SECONDS
        for slot in self._slots:
            if slot.thread is None:
                continue
            slot.thread.join(max(0.0, deadline - time.monotonic()))
            if slot.thread.is_alive() and slot.process is not None:
                log.warning("ingest worker %d did not stop in time: killing it", slot.index)
                slot.process.kill()
                slot.thread.join()

    # -- accepting ----------------------------------------------------------------------------

    def _accept(self) -> None:
        self._listening.settimeout(ACCEPT_POLL_SECONDS)
        settled = time.monotonic()
        while not self._stopping.is_set():
            if time.monotonic() - settled >= SETTLE_SECONDS:
                settled = time.monotonic()
                self._settle_dead_owners()
            try:
                connection, address = self._listening.accept()
            except TimeoutError:
                continue
            except OSError as exc:  # e.g. out of descriptors: the connection waits in the queue
                log.error("ingest cannot accept a connection: %s", exc)
                self._stopping.wait(ACCEPT_POLL_SECONDS)
                continue
            with connection:
                if not self._hand_over(connection):
                    log.error(
                        "no ingest worker is running: connection from %s:%d closed", *address[:2]
                    )

    def _settle_dead_owners(self) -> None:
        """End the associations of processes that are gone but still hold places.

        A worker's end normally does this at once (:meth:`_ended`); this catches what that
        could not record (a journal write that failed).
        """
        with self._lock:
            alive = {
                s.process.pid
                for s in self._slots
                if s.process is not None and s.process.returncode is None
            }
        cleanup_after = datetime.now(UTC) + timedelta(
            seconds=self._settings.ingest.aborted_cleanup_seconds
        )
        try:
            for owner in self._ownership.owners_holding() - alive - {os.getpid()}:
                ended = self._ownership.end_owned(owner, cleanup_after)
                for aborted in ended.aborted:
                    log.warning(
                        "association %s aborted: its process %d is gone",
                        aborted.association_id,
                        owner,
                    )
                for association_id in ended.released:
                    self._storage.released(association_id)
        except JournalError as exc:
            log.error("associations of ended workers not settled, retrying: %s", exc)

    def _hand_over(self, connection: socket.socket) -> bool:
        """To the running worker with the fewest connections; False if none would take it.

        A send never blocks: when every worker has as many connections waiting to be read
        as its socket holds (a burst of senders), this waits until one has room, up to
        :data:`HAND_OVER_SECONDS`; meanwhile new connections wait in the kernel's backlog.
        Sends happen outside the lock, which the supervisors need for the workers' news.
        """
        deadline = time.monotonic() + HAND_OVER_SECONDS
        while not self._stopping.is_set():
            busy: list[socket.socket] = []
            for slot, channel in self._by_load():
                with self._lock:  # counted first: its "closed" may come before we go on
                    slot.connections += 1
                try:
                    hand_over(channel, connection)
                except OSError as exc:
                    with self._lock:
                        slot.connections = max(0, slot.connections - 1)
                    if isinstance(exc, BlockingIOError):
                        busy.append(channel)
                    else:  # it is ending; its supervisor deals with that
                        log.warning(
                            "ingest worker %d cannot take a connection: %s", slot.index, exc
                        )
                else:
                    return True
            remaining = deadline - time.monotonic()
            if not busy or remaining <= 0:
                return False
            poller = select.poll()
            for channel in busy:
                poller.register(channel, select.POLLOUT)
            poller.poll(min(remaining, ACCEPT_POLL_SECONDS) * 1000)
        return False

    def _by_load(self) -> list[tuple[_Slot, socket.socket]]:
        """The running workers and their channels, fewest connections first."""
        with self._lock:
            running = [
                (s, s.channel) for s in self._slots if s.ready.is_set() and s.channel is not None
            ]
            running.sort(key=lambda entry: entry[0].connections)
        return [(slot, channel) for slot, channel in running if channel is not None]

    # -- one thread per slot ----------------------------------------------------------------

    def _supervise(self, slot: _Slot) -> None:
        while not self._stopping.is_set():
            try:
                self._run_one(slot)
            except OSError as exc:
                log.error("ingest worker %d cannot be started: %s", slot.index, exc)
            if self._stopping.is_set():
                return
            lived = time.monotonic() - slot.started
            slot.young_ends = slot.young_ends + 1 if lived < SHORT_LIFE_SECONDS else 0
            delay = restart_delay(slot.young_ends)
            log.warning("starting a new ingest worker %d in %.0f s", slot.index, delay)
            self._stopping.wait(delay)

    def _run_one(self, slot: _Slot) -> None:
        slot.started = time.monotonic()  # also for a start that fails: see _supervise
        parent_end, child_end = socket.socketpair()
        with parent_end:
            with child_end:
                process = subprocess.Popen(
                    [sys.executable, "-m", "ingest.workers.child"],
                    stdin=subprocess.PIPE,
                    pass_fds=(child_end.fileno(),),
                )
                document = WorkerStart(self._settings, self._log_level, child_end.fileno()).encode()
            slot.process = process
            with self._lock:
                slot.channel, slot.connections = parent_end, 0
            log.info("ingest worker %d started (pid %d)", slot.index, process.pid)
            try:
                assert process.stdin is not None  # stdin=PIPE
                with process.stdin:
                    process.stdin.write(document)
                with parent_end.makefile("rb") as lines:
                    for line in lines:
                        self._take(slot, line)
            except OSError as exc:  # it ended before reading its start-up document, or our end
                log.error("ingest worker %d: %s", slot.index, exc)
            finally:
                with self._lock:
                    slot.channel = None
                slot.ready.clear()
                status = process.wait()
                self._ended(slot, process.pid, status)

    def _take(self, slot: _Slot, line: bytes) -> None:
        try:
            message = decode(line)
        except WorkerMessageError as exc:
            log.error("ingest worker %d sent something unexpected: %s", slot.index, exc)
            return
        match message:
            case Ready():
                slot.ready.set()
            case Closed():
                with self._lock:
                    slot.connections = max(0, slot.connections - 1)
            case Spooled(association_id):
                self._storage.spooled(association_id)
            case Released(association_id):
                self._storage.released(association_id)
            case Aborted(association_id):
                self._storage.aborted(association_id)
            case CounterMoved(counter, labels, amount):
                try:
                    getattr(self._counters, counter).labels(*labels).inc(amount)
                except ValueError as exc:  # the wrong number of labels for that counter
                    log.error("ingest worker %d: counter %s: %s", slot.index, counter, exc)

    def _ended(self, slot: _Slot, pid: int, status: int) -> None:
        """The worker is gone: its associations end as they would after a crash."""
        if status != 0 or not self._stopping.is_set():
            log.error("ingest worker %d (pid %d) ended with status %d", slot.index, pid, status)
        cleanup_after = datetime.now(UTC) + timedelta(
            seconds=self._settings.ingest.aborted_cleanup_seconds
        )
        try:
            ended = self._ownership.end_owned(pid, cleanup_after)
        except JournalError as exc:
            log.error(
                "ingest worker %d: its associations could not be ended (%s); they count "
                "against the association limit until the next start",
                slot.index,
                exc,
            )
            return
        for aborted in ended.aborted:
            log.warning("association %s aborted: its ingest worker ended", aborted.association_id)
            self._counters.associations_ended.labels(aborted.called_ae_title, "aborted").inc()
            if self._settings.ingest.aborted_cleanup_seconds == 0:
                self._storage.aborted(aborted.association_id)
        for association_id in ended.released:
            self._storage.released(association_id)
