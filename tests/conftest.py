"""Fixtures shared by all tests: the services (RabbitMQ, S3), the gateway as a process, the
seed of tests that draw random choices; and the hooks that mark integration tests and name
a failed test's seed.

How the services are found is in :mod:`tests.support.services`; the helpers tests use directly
are in the other ``tests.support`` modules.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway_client.testing import GatewayProcess, Readiness
from tests.support import services
from tests.support.ingest import GatewayFactory
from tests.support.machine_share import machine_share
from tests.support.markers import mark_integration
from tests.support.seed import SEED_KEY, add_to_failed_report, draw_seed, replay_hint
from tests.support.services import S3Service, TestServices


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_integration(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    add_to_failed_report(item, report)
    return report


@pytest.fixture(autouse=True)
def _share_the_machine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Integration tests share the machine; one marked ``alone`` has it to itself."""
    if request.node.get_closest_marker("integration") is None:
        yield
        return
    # The parent of this process's base directory is shared by all of the session's processes.
    shared = tmp_path_factory.getbasetemp().parent
    with machine_share(shared, alone=request.node.get_closest_marker("alone") is not None):
        yield


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
def gateway_factory(tmp_path: Path, test_services: TestServices) -> Iterator[GatewayFactory]:
    """``gateway_factory(config)`` starts an ingest process and returns it once it is ready.

    Each process gets a directory of its own under the test's ``tmp_path`` (its TOML file, log
    and port file are there; relative paths in the configuration are relative to it). Whatever
    is still running at the end of the test is stopped: SIGTERM, then SIGKILL.
    """
    started: list[GatewayProcess] = []
    numbers = itertools.count(1)

    def start(config: Mapping[str, Any], *, until: Readiness = "ready") -> GatewayProcess:
        directory = tmp_path / f"gateway-{next(numbers)}"
        process = GatewayProcess(config, directory, services=test_services)
        started.append(process)
        return process.start(until)

    yield start
    for process in started:
        process.stop(timeout=15)


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for the whole test: bound here and never
    listened on, so that no process running alongside can take it (a free port could be)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def seed(request: pytest.FixtureRequest, test_services: TestServices) -> int:
    """The seed of a test's random choices: ``GATEWAY_TEST_SEED`` if set, else a fresh one.
    It is printed, and the report of a failure names it (:mod:`tests.support.seed`)."""
    value = draw_seed(test_services)
    request.node.stash[SEED_KEY] = value
    print(replay_hint(value))
    return value
