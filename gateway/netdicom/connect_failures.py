"""Why an association we requested got no connection, said in our own line instead of
pynetdicom's two.

When its TCP connect fails, pynetdicom logs two ERROR records on the association's DUL thread
("Association request failed: unable to connect to remote", "TCP Initialisation Error:
<error>") and then reports the association as aborted, without the error. Export retries a
destination that is down several times: each retry added those two lines to export's own
warning, which could not say why. With :func:`keep_connect_failures` installed, those records of
associations we requested are kept with the association instead of logged, and
:func:`connect_failure` hands the error to whoever reports the failure (export's retry
warning and the completion, ``echo``'s answer). An SSL error's traceback, which pynetdicom logs
as a third record, is still logged; records of accepted associations pass unchanged.
"""

from __future__ import annotations

import logging
import threading
import weakref

from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

#: The logger pynetdicom's transport writes these records to.
TRANSPORT_LOGGER = "pynetdicom.transport"
_UNABLE = "Association request failed: unable to connect to remote"
_ERROR_PREFIX = "TCP Initialisation Error: "

_failures: weakref.WeakKeyDictionary[Association, str] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def requested_association(thread: threading.Thread) -> Association | None:
    """The association we requested whose DUL runs on ``thread``, if it is one."""
    if not isinstance(thread, DULServiceProvider):
        return None
    assoc = thread.assoc
    return assoc if isinstance(assoc, Association) and assoc.is_requestor else None


class _KeepConnectFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message != _UNABLE and not message.startswith(_ERROR_PREFIX):
            return True
        assoc = requested_association(threading.current_thread())
        if assoc is None:
            return True
        if message.startswith(_ERROR_PREFIX):
            with _lock:
                _failures[assoc] = message.removeprefix(_ERROR_PREFIX)
        return False


_FILTER = _KeepConnectFailures()


def keep_connect_failures() -> None:
    """Install the filter on pynetdicom's transport logger (once; calling again does nothing)."""
    logger = logging.getLogger(TRANSPORT_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def connect_failure(assoc: Association) -> str | None:
    """Why ``assoc`` (one we requested) got no connection, if that is what happened."""
    with _lock:
        return _failures.get(assoc)
