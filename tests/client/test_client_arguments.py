"""What the client refuses before it talks to anything, and the reply keys it listens on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from contracts import ContractError, is_valid_routing_key
from gateway_client.client import PipelineClient, is_valid_consumer, reply_routing_key
from gateway_client.settings import BrokerSettings, ClientSettings, StorageSettings

ASSOCIATION = "0b6c1f4e-2f4a-4a8e-9d55-1c2b3a4d5e6f"


@pytest.fixture
def client(tmp_path: Path) -> PipelineClient:
    """A client on the embedded bus and file storage, not opened: nothing here needs them."""
    settings = ClientSettings(
        storage=StorageSettings(backend="file", path=tmp_path / "objects"),
        broker=BrokerSettings(url="", event_log=tmp_path / "events.sqlite3"),
    )
    return PipelineClient(settings, name="tests")


@pytest.mark.parametrize("name", ["", "has.dot", "has space", "x" * 65])
def test_client_names_are_one_routing_key_word(name: str) -> None:
    with pytest.raises(ContractError, match="cannot name a client"):
        PipelineClient(ClientSettings(), name=name)


@pytest.mark.parametrize(
    ("consumer", "valid"),
    [("lung", True), ("lung.v2:prod_1-a", True), ("", False), ("a b", False), ("x" * 201, False)],
)
def test_consumer_names(consumer: str, valid: bool) -> None:
    assert is_valid_consumer(consumer) is valid


def test_reply_keys_are_stable_per_export_and_client() -> None:
    key = reply_routing_key("tests", "export-1")
    assert key.startswith("export.completed.tests.")
    assert is_valid_routing_key(key)
    assert reply_routing_key("tests", "export-1") == key
    assert reply_routing_key("tests", "export-2") != key
    assert reply_routing_key("other", "export-1") != key


@pytest.mark.parametrize(
    "selection",
    [
        {},
        {"association_id": ASSOCIATION, "object_keys": [f"{ASSOCIATION}/1.2/1.2.3/1.2.3.4.dcm"]},
        {"object_keys": ["../../etc/passwd"]},
    ],
)
def test_export_requests_are_checked_before_publishing(
    client: PipelineClient, selection: dict[str, Any]
) -> None:
    with pytest.raises(ContractError, match="invalid export request"):
        asyncio.run(client.request_export(destination="pacs", **selection))


def test_waiting_needs_an_export_of_this_client(client: PipelineClient) -> None:
    with pytest.raises(ContractError, match="not requested by this client"):
        asyncio.run(client.wait_for_completion("someone-elses", timeout=1))


def test_objects_are_written_only_under_the_key_layout(client: PipelineClient) -> None:
    with pytest.raises(ContractError):
        asyncio.run(client.write_object("derived/result.dcm", b"DICM"))
