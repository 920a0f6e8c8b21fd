"""A real gateway and its services, for integration tests of pipelines (and of the gateway).

The fixtures of :mod:`gateway_client.pytest_plugin` are thin wrappers around this package,
which does not import pytest, so the same helpers work from any test runner or script. The
gateway's own tests and its benchmarks use it too.

- :mod:`~gateway_client.testing.services`: RabbitMQ and S3 from the ``GATEWAY_TEST_*``
  variables (:class:`TestServices`) or testcontainers, checked by their own protocols.
- :mod:`~gateway_client.testing.config`: the one configuration builder (:func:`gateway_config`),
  and what the runner adds (ports the system chooses, the ``netdicom`` mode).
- :mod:`~gateway_client.testing.process`: :class:`GatewayProcess`, the one way to start a
  gateway process (``ingest``, ``export`` or ``serve``), wait until ``/readyz`` answers 200,
  crash, stop and restart it.
- :mod:`~gateway_client.testing.gateway`: :func:`running_gateway`, a ``serve`` of a test's own,
  and :class:`RunningGateway`'s helpers (send instances, wait for association events).
- :mod:`~gateway_client.testing.cleanup`: bucket names of a test's own, and their deletion.
- :mod:`~gateway_client.testing.polling`, :mod:`~gateway_client.testing.toml_writer`: waiting,
  HTTP, free ports; writing the configuration as TOML.
"""

from gateway_client.testing.cleanup import (
    bucket_name_for,
    delete_amqp_topology,
    delete_bucket,
    is_valid_bucket_name,
)
from gateway_client.testing.config import (
    AE_TITLE,
    PIPELINE,
    Service,
    for_process,
    gateway_config,
    merged,
    with_netdicom,
)
from gateway_client.testing.gateway import RunningGateway, running_gateway
from gateway_client.testing.polling import free_port, http_get, wait_until
from gateway_client.testing.process import (
    DEFAULT_STARTUP_SECONDS,
    GatewayProcess,
    GatewayProcessError,
    Readiness,
    gateway_environment,
)
from gateway_client.testing.services import (
    ENVIRONMENT_HELP,
    MINIO_IMAGE,
    RABBITMQ_IMAGE,
    SERVICE_TIMEOUT_SECONDS,
    GatewayServices,
    S3Service,
    ServicesUnavailable,
    TestServices,
    amqp_answers,
    amqp_service,
    docker_available,
    gateway_services,
    redacted,
    s3_answers,
    s3_service,
    wait_for_amqp,
    wait_for_s3,
)
from gateway_client.testing.toml_writer import to_toml

__all__ = [
    "AE_TITLE",
    "DEFAULT_STARTUP_SECONDS",
    "ENVIRONMENT_HELP",
    "MINIO_IMAGE",
    "PIPELINE",
    "RABBITMQ_IMAGE",
    "SERVICE_TIMEOUT_SECONDS",
    "GatewayProcess",
    "GatewayProcessError",
    "GatewayServices",
    "Readiness",
    "RunningGateway",
    "S3Service",
    "Service",
    "ServicesUnavailable",
    "TestServices",
    "amqp_answers",
    "amqp_service",
    "bucket_name_for",
    "delete_amqp_topology",
    "delete_bucket",
    "docker_available",
    "for_process",
    "free_port",
    "gateway_config",
    "gateway_environment",
    "gateway_services",
    "http_get",
    "is_valid_bucket_name",
    "merged",
    "redacted",
    "running_gateway",
    "s3_answers",
    "s3_service",
    "to_toml",
    "wait_for_amqp",
    "wait_for_s3",
    "wait_until",
    "with_netdicom",
]
