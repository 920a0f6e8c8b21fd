"""Fixtures of the end-to-end tests; the harness they use is :mod:`tests.support.ingest`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway_client.testing import TestServices
from tests.support.ingest import GatewayFactory, Ingest, parametrize_backends
from tests.support.power_loss_fs import PowerLossFs, power_loss_fs
from tests.support.services import S3Service


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_backends(metafunc)


@pytest.fixture
def ingest(  # noqa: PLR0917 (pytest passes fixtures by name)
    amqp_url: str,
    s3_service: S3Service,
    bucket_name: str,
    tmp_path: Path,
    gateway_factory: GatewayFactory,
    backend: str,
) -> Iterator[Ingest]:
    harness = Ingest(amqp_url, s3_service, bucket_name, tmp_path, gateway_factory, backend)
    yield harness
    harness.delete_shared()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """A directory for the test's generated DICOM files."""
    directory = tmp_path / "in"
    directory.mkdir()
    return directory


@pytest.fixture
def power_fs(tmp_path: Path, test_services: TestServices) -> Iterator[PowerLossFs]:
    """The power-loss file system (:mod:`tests.support.power_loss_fs`), mounted for the test;
    the test is skipped where FUSE cannot run, or fails where the environment requires it."""
    with power_loss_fs(tmp_path / "power", required=test_services.fuse_required) as fs:
        yield fs
