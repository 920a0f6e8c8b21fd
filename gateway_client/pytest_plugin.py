"""pytest fixtures for a pipeline's integration tests: a real gateway, on real services.

Registered with pytest (entry point ``pytest11``, name ``dicom_gateway``) when the
``dicom-gateway`` package is installed; disable it with ``-p no:dicom_gateway``.

Fixtures:

- ``gateway_services`` (session): RabbitMQ and S3 (:class:`gateway_client.testing.GatewayServices`)
  from ``GATEWAY_TEST_AMQP_URL``, ``GATEWAY_TEST_S3_ENDPOINT``, ``GATEWAY_TEST_S3_ACCESS_KEY``
  and ``GATEWAY_TEST_S3_SECRET_KEY``, else containers started with testcontainers when Docker
  answers, else the test fails saying which variables to set (or is skipped, with
  ``dicom_gateway_missing_services = skip`` in the pytest configuration).
- ``dicom_gateway`` (per test): ``dicom-gateway serve`` against those services, with a bucket,
  exchange and export queue of the test's own, on ports the system chose, ready (``/readyz``
  answered 200). It is a :class:`gateway_client.testing.RunningGateway`: ``host``, ``port``,
  ``http_port``, ``ae_title``, ``settings``, ``config_path``, ``send(paths_or_datasets)``,
  ``wait_for_association(timeout)``, ``consumer_name(stem)``;
  ``PipelineClient(ClientSettings.from_gateway(gateway.settings), name=...)`` talks to it.
- ``embedded_gateway`` (per test): the same with no services at all (local event log and file
  storage under the test's ``tmp_path``).
- ``dicom_gateway_config``: a dict merged into both gateways' configuration; override it, e.g.
  to add ``{"export": {"destinations": [...]}}``. Empty by default.

Example::

    def test_my_pipeline(dicom_gateway, tmp_path):
        consumer = dicom_gateway.consumer_name("my-pipeline")
        ...  # subscribe the consumer first, then:
        dicom_gateway.send(sorted(tmp_path.glob("*.dcm")))
        released = dicom_gateway.wait_for_association(timeout=30)

This module is imported in every pytest run of an environment where the package is installed,
so it imports nothing heavy until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from gateway_client.testing import GatewayServices, RunningGateway

MISSING_SERVICES_OPTION = "dicom_gateway_missing_services"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        MISSING_SERVICES_OPTION,
        "what gateway_services does when neither GATEWAY_TEST_* nor Docker gives it RabbitMQ "
        "and S3: fail (default) or skip",
        default="fail",
    )


@pytest.fixture(scope="session")
def gateway_services(pytestconfig: pytest.Config) -> Iterator[GatewayServices]:
    """RabbitMQ and S3 for the whole session (see the module docstring)."""
    from gateway_client import testing  # noqa: PLC0415 (imported when used: keeps start-up cheap)

    with ExitStack() as stack:
        try:
            services = stack.enter_context(testing.gateway_services(testing.TestServices()))
        except testing.ServicesUnavailable as exc:
            if pytestconfig.getini(MISSING_SERVICES_OPTION) == "skip":
                pytest.skip(str(exc))
            pytest.fail(str(exc), pytrace=False)
        yield services


@pytest.fixture
def dicom_gateway_config() -> dict[str, Any]:
    """Merged into the configuration of ``dicom_gateway`` and ``embedded_gateway``."""
    return {}


@pytest.fixture
def dicom_gateway(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    gateway_services: GatewayServices,
    dicom_gateway_config: dict[str, Any],
) -> Iterator[RunningGateway]:
    """``dicom-gateway serve`` on RabbitMQ and S3, for this test only."""
    from gateway_client import testing  # noqa: PLC0415

    with testing.running_gateway(
        tmp_path / "dicom-gateway",
        gateway_services,
        name=request.node.name,
        overrides=dicom_gateway_config,
    ) as gateway:
        yield gateway


@pytest.fixture
def embedded_gateway(
    request: pytest.FixtureRequest, tmp_path: Path, dicom_gateway_config: dict[str, Any]
) -> Iterator[RunningGateway]:
    """``dicom-gateway serve`` on its embedded defaults (no services), for this test only."""
    from gateway_client import testing  # noqa: PLC0415

    with testing.running_gateway(
        tmp_path / "embedded-gateway", None, name=request.node.name, overrides=dicom_gateway_config
    ) as gateway:
        yield gateway
