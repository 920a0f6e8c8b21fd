"""The one exception tree of the gateway.

Library exceptions (minio, aio-pika, sqlite3, OSError) are converted to these at the adapter that
calls the library, with ``raise ... from exc``, so the services only ever handle gateway errors.
"""


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; start-up stops with a non-zero exit."""


class IncompatibleLibrary(ConfigError):
    """An installed library is not what the gateway's extensions of it are written for; start-up
    stops with exit status 2, and the message says what to install or configure instead."""


class UsageError(GatewayError):
    """A command was given what it cannot use (a malformed id, an unknown destination): it
    stops before doing anything, with exit status 2 and one line naming the value."""


class StorageUnavailable(GatewayError):
    """The object store could not be reached or refused a request; the operation may be retried."""


class WorkingSpaceFull(GatewayError):
    """A local file system had no room for what was being written there (an object fetched
    for export, say); retrying once room is made may succeed."""


class ObjectChanged(GatewayError):
    """The object store refused an object whose bytes are not those of the hash it was sent
    with: the spool copy changed after it was received, and retrying sends the same bytes."""


class ObjectMissing(GatewayError):
    """The object store answered: there is no object under that key (not worth retrying)."""


class BrokerUnavailable(GatewayError):
    """RabbitMQ could not be reached or did not confirm a publish; the publish may be retried."""


class EventRefused(BrokerUnavailable):
    """The broker refused this one message (a negative confirm, or a message it will not take,
    such as one over its size limit); the broker itself works, and other messages may pass.
    Callers that retry every unconfirmed publish alike may treat it as BrokerUnavailable."""


class EventUnroutable(GatewayError):
    """The broker took the event but no queue is bound to its routing key (returned)."""


class JournalError(GatewayError):
    """The local journal (SQLite) could not record a change."""


class WorkerMessageError(GatewayError):
    """An ingest worker process or its parent sent something that is not a message of theirs."""


class InstanceRejected(GatewayError):
    """A received data set cannot be stored; carries the DICOM status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class LimitCrossed(InstanceRejected):
    """A data set refused while it arrived, for crossing a receive limit; it was logged and
    counted when it crossed it (its answer may come much later, or never)."""
