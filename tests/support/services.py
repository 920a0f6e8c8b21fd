"""Where the tests find RabbitMQ and S3.

The discovery itself is :mod:`gateway_client.testing`, shared with the pytest plugin that
pipelines use: the ``GATEWAY_TEST_*`` environment variables (set by ``.ci/run``, or by a
developer who runs the services some other way); otherwise containers started with
testcontainers when a Docker engine answers. This module turns "not available" into a test
failure that says which variables to set.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import TypeVar

import pytest

from gateway_client import testing
from gateway_client.testing import (
    ENVIRONMENT_HELP,
    MINIO_IMAGE,
    RABBITMQ_IMAGE,
    S3Service,
    TestServices,
    amqp_answers,
    bucket_name_for,
    docker_available,
    is_valid_bucket_name,
    redacted,
    s3_answers,
)

__all__ = [
    "ENVIRONMENT_HELP",
    "MINIO_IMAGE",
    "RABBITMQ_IMAGE",
    "S3Service",
    "TestServices",
    "amqp_answers",
    "amqp_service",
    "bucket_name_for",
    "docker_available",
    "is_valid_bucket_name",
    "redacted",
    "s3_answers",
    "s3_service",
    "wait_for_amqp",
    "wait_for_s3",
]

T = TypeVar("T")


def wait_for_amqp(url: str, timeout: float = testing.SERVICE_TIMEOUT_SECONDS) -> None:
    try:
        testing.wait_for_amqp(url, timeout)
    except testing.ServicesUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def wait_for_s3(service: S3Service, timeout: float = testing.SERVICE_TIMEOUT_SECONDS) -> None:
    try:
        testing.wait_for_s3(service, timeout)
    except testing.ServicesUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@contextmanager
def amqp_service(settings: TestServices) -> Iterator[str]:
    """Yield the AMQP URL of a RabbitMQ that answers; a container lives as long as the block."""
    with ExitStack() as stack:
        yield _entered(stack, testing.amqp_service(settings))


@contextmanager
def s3_service(settings: TestServices) -> Iterator[S3Service]:
    """Yield an S3 service that answers; a container lives as long as the block."""
    with ExitStack() as stack:
        yield _entered(stack, testing.s3_service(settings))


def _entered(stack: ExitStack, service: AbstractContextManager[T]) -> T:
    # Only entering can find the service missing; failures inside the block are the test's own.
    try:
        return stack.enter_context(service)
    except testing.ServicesUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
