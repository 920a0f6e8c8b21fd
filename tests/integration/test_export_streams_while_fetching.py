"""Export sends while it fetches, to dcmtk's storescp: with the contexts known from the
association's instance manifest, the association opens at once and the first instance is
received while a later object's download is held, waiting for exactly that."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pynetdicom import _config as pynetdicom_config

from contracts.export import ExportRequested, ExportStatus, InstanceOutcome
from contracts.keys import new_association_id
from gateway.objectstore import FileStore
from gateway.settings import StorageSettings
from gateway_client.testing import wait_until
from tests.support.exporters import exporter_to
from tests.support.factories import ct_series, dataset_digest
from tests.support.instance_manifests import put_with_manifest
from tests.support.storescp import Storescp
from tests.unit.test_export_streaming import HOLD_DEADLINE, WatchedStore

#: The download held back: the third, well inside the window the first association used to wait
#: for before it opened.
HELD = 2


@pytest.fixture(autouse=True)
def sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends files as stored (what export's start-up sets), put back afterwards."""
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)


def test_storescp_receives_the_first_instance_while_a_later_one_is_still_fetched(
    tmp_path: Path,
) -> None:
    files = FileStore(StorageSettings(backend="file", path=tmp_path / "objects", bucket="b"))
    association = new_association_id()
    series = ct_series(tmp_path / "in", 20)
    keys = sorted(put_with_manifest(files, association, series))
    held: list[bool] = []

    with Storescp(tmp_path / "pacs") as pacs:

        def hold_until_received(key: str) -> None:
            if key == keys[HELD]:
                try:
                    wait_until(lambda: bool(pacs.received_files()), HOLD_DEADLINE, "storescp")
                    held.append(True)
                except TimeoutError:
                    held.append(False)

        watched = WatchedStore(files, hold_until_received)
        exporter = exporter_to("pacs", pacs.ae_title, pacs.port, watched, tmp_path / "export")
        request = ExportRequested(
            export_id="streams-while-fetching", destinations=("pacs",), association_id=association
        )
        done = asyncio.run(exporter.run(request))
        received = dict(pacs.received_digests())

    assert held == [True], "the first instance did not reach storescp before a later download"
    assert done.status is ExportStatus.SUCCEEDED
    (result,) = done.destinations
    assert all(i.status is InstanceOutcome.SENT for i in result.instances)
    expected = {}
    for instance in series:
        with instance.path.open("rb") as data:
            expected[instance.uids.sop_instance] = dataset_digest(data)[0]
    assert received == expected
