"""The protocol layer's log records, a few per connection whatever the peer sends.

A peer that connects decides how often pynetdicom logs: each undecodable PDU is an ERROR with a
traceback of about 17 lines, each unknown transfer syntax in a request a WARNING. One
connection of 100 undecodable PDUs wrote 1,700 lines, one 8 MB request 281,600
(docs/reliability.md, "Log lines a peer can call up"). So the records of the ``pynetdicom`` and
``gateway.netdicom`` loggers on an accepted connection's threads are limited: of each kind
(warnings, errors) the connection's first problem is written as it is reported, in up to
:data:`SHOWN_PER_KIND` records, the last of them the first one with an exception, which is said
on its own line instead of a traceback. The rest are counted, and when the connection closes
one line says how many were left out (:func:`handle_conn_close`).

pynetdicom runs each connection on two threads of its own, the association's and its DUL's,
and logs a connection's problems on them: that is how a record is traced to its connection.
Records of other threads, and of associations we requested (export's, to destinations we
chose), pass unchanged.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

log = logging.getLogger(__name__)

#: The loggers whose records a peer's data calls up: pynetdicom's and our protocol layer's.
LIMITED_LOGGERS = ("pynetdicom", "gateway.netdicom")
#: Records of one kind written per connection at most: pynetdicom reports one failure in up
#: to three (what was wrong with a field, that the PDU could not be decoded, the exception).
SHOWN_PER_KIND = 3


@dataclass
class Budget:
    """One kind of record of one connection: how many were written, how many left out."""

    shown: int = 0
    exception_shown: bool = False
    left_out: int = 0

    def admit(self, has_exception: bool) -> bool:
        """Whether the next record is written: until one with an exception has been, and
        :data:`SHOWN_PER_KIND` at most."""
        if self.exception_shown or self.shown >= SHOWN_PER_KIND:
            self.left_out += 1
            return False
        self.shown += 1
        self.exception_shown = has_exception
        return True


@dataclass
class _Connection:
    warnings: Budget = field(default_factory=Budget)
    errors: Budget = field(default_factory=Budget)

    def budget(self, level: int) -> Budget:
        return self.errors if level >= logging.ERROR else self.warnings


def one_line(message: str, exception: BaseException) -> str:
    """``message`` with ``exception`` said after it, where a traceback would follow it."""
    said = f"{type(exception).__name__}: {exception}"
    # pynetdicom logs an exception as LOGGER.exception(exc): the message is its text already.
    return said if message == str(exception) else f"{message} ({said})"


def accepted_association(thread: threading.Thread) -> Association | None:
    """The accepted association that ``thread`` runs (as its own thread or its DUL's)."""
    owner = thread.assoc if isinstance(thread, DULServiceProvider) else thread
    if isinstance(owner, Association) and owner.is_acceptor:
        return owner
    return None


def _limited(logger_name: str) -> bool:
    return logger_name != log.name and any(
        logger_name == name or logger_name.startswith(f"{name}.") for name in LIMITED_LOGGERS
    )


class ConnectionLogLimit(logging.Filter):
    """A handler's filter that writes the records of each connection as the module says.

    ``connection_of`` tells the connection of the thread a record is logged on (None: not a
    connection's thread).
    """

    def __init__(
        self,
        connection_of: Callable[[threading.Thread], Association | None] = accepted_association,
    ) -> None:
        super().__init__()
        self._connection_of = connection_of
        self._lock = threading.Lock()
        # Forgotten with the association; a closed one's stays, so that records logged after
        # its close are left out too rather than start again.
        self._connections: weakref.WeakKeyDictionary[Association, _Connection] = (
            weakref.WeakKeyDictionary()
        )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not _limited(record.name):
            return True
        connection = self._connection_of(threading.current_thread())
        if connection is None:
            return True
        exception = record.exc_info[1] if record.exc_info else None
        with self._lock:
            state = self._connections.setdefault(connection, _Connection())
            shown = state.budget(record.levelno).admit(exception is not None)
        if shown and exception is not None:
            _inline(record, exception)
        return shown

    def connection_closed(self, connection: Association, peer: str) -> None:
        """Log how many of the records of ``connection`` (from ``peer``) were left out."""
        with self._lock:
            state = self._connections.get(connection)
            if state is None:
                return
            errors, warnings = state.errors.left_out, state.warnings.left_out
            state.errors.left_out = state.warnings.left_out = 0
        if errors or warnings:
            log.warning(
                "connection from %s: %d more errors and %d more warnings of the DICOM protocol "
                "layer left out of the log",
                peer,
                errors,
                warnings,
            )


def _inline(record: logging.LogRecord, exception: BaseException) -> None:
    """Put ``exception`` on the record's line and drop its traceback."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):  # its arguments do not fit: the handler says so
        return
    record.msg, record.args = one_line(message, exception), None
    record.exc_info, record.exc_text = None, None


#: The process's limit: records are the process's, as its log handlers are.
CONNECTION_LOG_LIMIT = ConnectionLogLimit()


def limit_connection_logs() -> None:
    """Apply :data:`CONNECTION_LOG_LIMIT` to the handlers of the root logger (those of
    ``gateway.logs.configure_logging``); once, however often it is called."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(CONNECTION_LOG_LIMIT)


def handle_conn_close(event: evt.Event) -> None:
    """``EVT_CONN_CLOSE`` handler: how many of the connection's records were left out."""
    peer = event.assoc.requestor
    CONNECTION_LOG_LIMIT.connection_closed(event.assoc, f"{peer.address}:{peer.port}")
