"""The backends the settings choose: the object store (files or S3) and the event publisher
(the local event log or RabbitMQ).

Each library is imported only when its backend is configured: minio-py and aio-pika are a good
part of a service's start-up, which a service on the embedded defaults does without. Above the
interfaces (:mod:`gateway.objectstore`, :mod:`gateway.bus`) and their implementations, so that
neither interface imports an implementation.
"""

from __future__ import annotations

from gateway.bus import LocalPublisher, Publisher
from gateway.errors import ConfigError
from gateway.eventlog import EventLog
from gateway.objectstore import FileStore, ObjectStore
from gateway.settings import BrokerSettings, StorageSettings


def open_store(settings: StorageSettings) -> ObjectStore:
    if settings.backend == "file":
        return FileStore(settings)
    from gateway.s3store import S3Store  # noqa: PLC0415 (see the module docstring)

    return S3Store(settings)


def open_publisher(
    settings: BrokerSettings, connection_name: str, log: EventLog | None
) -> Publisher:
    """The publisher for the configured bus; ``log`` is required when it is the local one."""
    if settings.embedded:
        if log is None:
            raise ConfigError("the local event bus needs an open event log")
        return LocalPublisher(log)
    from gateway.broker import AmqpPublisher  # noqa: PLC0415 (see the module docstring)

    return AmqpPublisher(settings.url, settings.exchange, connection_name)
