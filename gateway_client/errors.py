"""What the pipeline client raises, under the names a pipeline catches them by.

They are the gateway's own classes, handed out here, so that ``except
gateway_client.BrokerUnavailable`` catches exactly what the client raises and a pipeline never
imports the gateway::

    GatewayError                 everything the client raises on purpose
    ├── ConfigError              the settings are invalid, or RabbitMQ refused a declaration
    ├── BrokerUnavailable        the bus (RabbitMQ, the local event log) failed; retry later
    ├── EventUnroutable          RabbitMQ took an export request nobody consumes
    ├── StorageUnavailable       the object store failed; retry later
    ├── ObjectMissing            no object under that key (not worth retrying)
    └── CompletionTimeout        no completion of an export in time; it may still come

Invalid arguments (a consumer or client name, an object key, an export request) raise
:class:`contracts.ContractError`, a :class:`ValueError`, before anything is sent.
"""

from __future__ import annotations

from gateway.errors import (
    BrokerUnavailable,
    ConfigError,
    EventUnroutable,
    GatewayError,
    ObjectMissing,
    StorageUnavailable,
)

__all__ = [
    "BrokerUnavailable",
    "CompletionTimeout",
    "ConfigError",
    "EventUnroutable",
    "GatewayError",
    "ObjectMissing",
    "StorageUnavailable",
]


class CompletionTimeout(GatewayError):
    """No completion of the export arrived in time; it may still arrive later."""
