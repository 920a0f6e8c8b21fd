"""A small async client for pipelines that work on what the DICOM gateway receives.

A pipeline waits for association-released events (or, with
:meth:`~gateway_client.client.PipelineClient.subscribe_studies`, for stable-study events),
reads the stored instances, writes what it derives back to the same storage, and asks the
export service to send objects on::

    from contextlib import aclosing
    from gateway_client import PipelineClient, derived_object_key

    async with PipelineClient.from_config(Path("gateway.toml"), name="lung") as client:
        async with aclosing(client.associations(pipeline="lung", consumer="lung")) as events:
            async for received in events:
                for instance in received.event.instances:
                    data = await client.read_object(instance.object_key)
                key = derived_object_key(received.event.association_id, "lung", study, series, sop)
                await client.write_object(key, part10_bytes)
                export_id = await client.request_export(destination="pacs", object_keys=[key])
                print(await client.wait_for_completion(export_id, timeout=300))
                await received.ack()

It works on both buses the gateway can use, as its settings say: RabbitMQ (``[broker] url``)
or the local event log of ``dicom-gateway serve``; and on both storage backends (S3, files).

- :mod:`gateway_client.client`: :class:`PipelineClient` and what it hands out.
- :mod:`gateway_client.settings`: :class:`ClientSettings`, the ``[broker]`` and ``[storage]``
  sections of the gateway's configuration (file and ``GATEWAY_*`` variables).
- :mod:`gateway_client.errors`: what the client raises, all under ``GatewayError``.
- :mod:`gateway_client.keys`: where derived objects are stored.
- :mod:`gateway_client.transport`: the RabbitMQ and local-event-log topologies.
- :mod:`gateway_client.testing` and :mod:`gateway_client.pytest_plugin`: a real gateway and its
  services for a pipeline's own integration tests (fixtures ``gateway_services``,
  ``dicom_gateway``, ``embedded_gateway``; the plugin is registered with pytest on install).

The names below are imported on first use, so that ``import gateway_client`` (which pytest does
for the plugin in every test run) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway_client.client import PipelineClient
    from gateway_client.errors import (
        BrokerUnavailable,
        CompletionTimeout,
        ConfigError,
        EventUnroutable,
        GatewayError,
        ObjectMissing,
        StorageUnavailable,
    )
    from gateway_client.keys import (
        derived_association_id,
        derived_object_key,
        is_derived_association_id,
    )
    from gateway_client.settings import BrokerSettings, ClientSettings, StorageSettings
    from gateway_client.subscription import (
        Received,
        ReceivedAssociation,
        ReceivedStudy,
        Subscription,
    )

_WHERE = {
    "PipelineClient": "gateway_client.client",
    "Received": "gateway_client.subscription",
    "ReceivedAssociation": "gateway_client.subscription",
    "ReceivedStudy": "gateway_client.subscription",
    "Subscription": "gateway_client.subscription",
    "BrokerUnavailable": "gateway_client.errors",
    "CompletionTimeout": "gateway_client.errors",
    "ConfigError": "gateway_client.errors",
    "EventUnroutable": "gateway_client.errors",
    "GatewayError": "gateway_client.errors",
    "ObjectMissing": "gateway_client.errors",
    "StorageUnavailable": "gateway_client.errors",
    "derived_association_id": "gateway_client.keys",
    "derived_object_key": "gateway_client.keys",
    "is_derived_association_id": "gateway_client.keys",
    "BrokerSettings": "gateway_client.settings",
    "ClientSettings": "gateway_client.settings",
    "StorageSettings": "gateway_client.settings",
}

__all__ = [
    "BrokerSettings",
    "BrokerUnavailable",
    "ClientSettings",
    "CompletionTimeout",
    "ConfigError",
    "EventUnroutable",
    "GatewayError",
    "ObjectMissing",
    "PipelineClient",
    "Received",
    "ReceivedAssociation",
    "ReceivedStudy",
    "StorageSettings",
    "StorageUnavailable",
    "Subscription",
    "derived_association_id",
    "derived_object_key",
    "is_derived_association_id",
]


def __getattr__(name: str) -> object:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
