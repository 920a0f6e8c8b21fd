"""Which tests are integration tests: ``python -m pytest -m "not integration"`` runs the rest
without RabbitMQ, S3 or dcmtk.

Every test under ``tests/integration`` is one, and so is every test whose fixtures include a
service or a gateway process (:data:`SERVICE_FIXTURES`, looked for in the whole fixture
closure). A fixture that requests a service fixture by name at run time
(``request.getfixturevalue``) is invisible here: mark the parameters that do so with
``pytest.mark.integration`` themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

INTEGRATION_DIRECTORY = Path(__file__).resolve().parents[1] / "integration"
#: Fixtures that give RabbitMQ, S3 or a running gateway (tests' own and the pytest plugin's).
SERVICE_FIXTURES = frozenset(
    {
        "amqp_url",
        "s3_service",
        "gateway_factory",
        "ingest",
        "gateway_services",
        "dicom_gateway",
        "embedded_gateway",
    }
)


def is_integration(item: pytest.Item) -> bool:
    fixtures = set(getattr(item, "fixturenames", ()))
    return INTEGRATION_DIRECTORY in item.path.parents or bool(fixtures & SERVICE_FIXTURES)


def mark_integration(items: Iterable[pytest.Item]) -> None:
    for item in items:
        if is_integration(item):
            item.add_marker(pytest.mark.integration)
