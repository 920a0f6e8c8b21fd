"""A worker process and its parent talk over a Unix socket pair.

The parent sends connections: one byte with the connection's descriptor attached
(``SCM_RIGHTS``). The worker answers with one message per line (:mod:`ingest.workers.messages`).
Lines are written whole under a lock, so the threads of a worker never interleave them, and
in order, so a release arrives after the counts of its instances.
"""

from __future__ import annotations

import array
import logging
import socket
import threading
from collections.abc import Callable, Iterator

from gateway.metrics import LISTENER_COUNTERS, Increment, ListenerCounters
from ingest.workers.messages import Aborted, CounterMoved, Message, Released, Spooled, encode

log = logging.getLogger(__name__)


class Channel:
    """The worker's end: thread-safe, whole lines."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._broken = False

    def send(self, message: Message) -> bool:
        """Whether the line went out; False once the parent is gone (it stops the worker too).

        Never raises: it is called from pynetdicom's handlers, after the work it reports is
        done and recorded, and must not turn that into a failure answered to the sender.
        """
        line = encode(message)
        with self._lock:
            if self._broken:
                return False
            try:
                self._sock.sendall(line)
            except OSError as exc:
                self._broken = True
                log.error("cannot reach the ingest parent process: %s", exc)
                return False
        return True

    def close(self) -> None:
        with self._lock:
            self._broken = True  # later sends (a connection ending late) are dropped quietly
            self._sock.close()


#: The byte that travels with each handed-over connection's descriptor.
_CONNECTION = b"c"


def hand_over(channel: socket.socket, connection: socket.socket) -> None:
    """Send ``connection`` to the worker at the other end, without waiting.

    Raises :class:`OSError`: :class:`BlockingIOError` when the worker has not read what it
    was sent before.
    """
    # Not socket.send_fds: it drops its flags argument (Python 3.11).
    rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [connection.fileno()]))
    channel.sendmsg([_CONNECTION], [rights], socket.MSG_DONTWAIT)


def receive_connections(
    channel: socket.socket, lost: Callable[[int], None]
) -> Iterator[socket.socket]:
    """The connections the parent hands over, until it closes its end (or is gone).

    ``lost(n)``: n connections were sent but their descriptors did not arrive (this process
    had no descriptor left for them, say); they are closed, and the parent must be told.
    """
    while True:
        try:
            data, fds, flags, _address = socket.recv_fds(channel, 64, 64)
        except OSError as exc:
            log.error("ingest worker: cannot receive connections: %s", exc)
            return
        if not data:
            return
        for fd in fds:
            yield socket.socket(fileno=fd)
        missing = data.count(_CONNECTION) - len(fds)
        if missing > 0 or flags & socket.MSG_CTRUNC:
            log.error("ingest worker: %d connections were lost on their way here", missing)
            lost(max(missing, 0))


class _ForwardedIncrement:
    def __init__(self, channel: Channel, counter: str, labels: tuple[str, ...]) -> None:
        self._channel = channel
        self._counter = counter
        self._labels = labels

    def inc(self, amount: float = 1) -> None:
        self._channel.send(CounterMoved(self._counter, self._labels, amount))


class _ForwardedCounter:
    def __init__(self, channel: Channel, counter: str) -> None:
        self._channel = channel
        self._counter = counter

    def labels(self, *labelvalues: str) -> Increment:
        return _ForwardedIncrement(self._channel, self._counter, labelvalues)


def forwarded_counters(channel: Channel) -> ListenerCounters:
    """Counters that count in the parent's registry (the one ``/metrics`` shows)."""
    return ListenerCounters(
        **{name: _ForwardedCounter(channel, name) for name in LISTENER_COUNTERS}
    )


class ForwardedStorage:
    """Hands the associations of this worker to the parent's uploader."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def spooled(self, association_id: str) -> None:
        if not self._channel.send(Spooled(association_id)):
            log.error(
                "association %s: an instance is spooled, but the parent is gone; it is "
                "uploaded once the association is settled",
                association_id,
            )

    def released(self, association_id: str) -> None:
        if not self._channel.send(Released(association_id)):
            log.error(
                "association %s: released and recorded, but the parent is gone; the next "
                "start uploads and announces it",
                association_id,
            )

    def aborted(self, association_id: str) -> None:
        if not self._channel.send(Aborted(association_id)):
            log.error(
                "association %s: aborted, but the parent is gone; the next start removes it",
                association_id,
            )
