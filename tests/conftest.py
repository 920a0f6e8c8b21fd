"""Fixtures shared by all tests: the services (RabbitMQ, S3) and the gateway as a process.

How the services are found is in :mod:`tests.support.services`; the helpers tests use directly
are in the other ``tests.support`` modules.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support import services
from tests.support.gateway import GatewayFactory, GatewayProcess
from tests.support.services import S3Service, TestServices


@pytest.fixture(scope="session")
def test_services() -> TestServices:
    return TestServices()


@pytest.fixture(scope="session")
def amqp_url(test_services: TestServices) -> Iterator[str]:
    """URL of a RabbitMQ that answers, for the whole session."""
    with services.amqp_service(test_services) as url:
        yield url


@pytest.fixture(scope="session")
def s3_service(test_services: TestServices) -> Iterator[S3Service]:
    """An S3 service that answers a signed request, for the whole session."""
    with services.s3_service(test_services) as service:
        yield service


@pytest.fixture
def bucket_name(request: pytest.FixtureRequest) -> str:
    """A fresh bucket name for this test (not created: the test or the gateway does that)."""
    return services.bucket_name_for(request.node.name)


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[GatewayFactory]:
    """``gateway_factory(config)`` starts the gateway and returns it once it answers.

    Each process gets a directory of its own under the test's ``tmp_path`` (its TOML file and
    log are there; relative paths in the configuration are relative to it). Whatever is still
    running at the end of the test is stopped: SIGTERM, then SIGKILL.
    """
    started: list[GatewayProcess] = []
    numbers = itertools.count(1)

    def start(config: Mapping[str, Any]) -> GatewayProcess:
        process = GatewayProcess(config, tmp_path / f"gateway-{next(numbers)}")
        started.append(process)
        return process.start()

    yield start
    for process in started:
        if process.is_running():
            try:
                process.terminate(timeout=15)
            except AssertionError:
                continue  # terminate() has killed it; the test's own outcome matters more
