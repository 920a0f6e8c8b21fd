"""In prompt mode export sends each instance without pynetdicom's ``send_c_store``
(gateway/netdicom/store_dimse.py), in plain mode with it; dcmtk's storescp receives every data
set byte for byte either way. (Statuses, warnings and message IDs through the same path:
test_export_destinations.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association

from contracts.export import ExportCompleted, ExportRequested, ExportStatus, InstanceOutcome
from contracts.keys import new_association_id
from gateway.objectstore import FileStore
from gateway.settings import NetdicomMode, StorageSettings
from tests.support.exporters import exporter_to
from tests.support.factories import ct_series, dataset_digest
from tests.support.instance_manifests import put_with_manifest
from tests.support.storescp import Storescp


@pytest.fixture(autouse=True)
def sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends files as stored (what export's start-up sets), put back afterwards."""
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)


def _counting(calls: list[int], original: Callable[..., Any]) -> Callable[..., Any]:
    def send_c_store(self: Association, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    return send_c_store


def _export(
    tmp_path: Path, mode: NetdicomMode
) -> tuple[ExportCompleted, dict[str, str], dict[str, str]]:
    files = FileStore(StorageSettings(backend="file", path=tmp_path / "objects", bucket="b"))
    association = new_association_id()
    series = ct_series(tmp_path / "in", 12)
    put_with_manifest(files, association, series)
    with Storescp(tmp_path / "pacs") as pacs:
        exporter = exporter_to(
            "pacs", pacs.ae_title, pacs.port, files, tmp_path / "export", mode=mode
        )
        request = ExportRequested(
            export_id=f"direct-{mode}", destinations=("pacs",), association_id=association
        )
        done = asyncio.run(exporter.run(request))
        received = dict(pacs.received_digests())
    expected = {}
    for instance in series:
        with instance.path.open("rb") as data:
            expected[instance.uids.sop_instance] = dataset_digest(data)[0]
    return done, received, expected


@pytest.mark.parametrize("mode", ["prompt", "plain"])
def test_every_instance_arrives_as_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: NetdicomMode
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(Association, "send_c_store", _counting(calls, Association.send_c_store))
    done, received, expected = _export(tmp_path, mode)
    assert done.status is ExportStatus.SUCCEEDED
    (result,) = done.destinations
    assert [i.status for i in result.instances] == [InstanceOutcome.SENT] * 12
    assert received == expected
    assert len(calls) == (0 if mode == "prompt" else 12)
