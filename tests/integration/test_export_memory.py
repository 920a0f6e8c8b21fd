"""Export streams: a 1 GiB instance does not grow the export process by more than ~100 MB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.export import ExportRequested, ExportStatus, InstanceOutcome
from tests.support.export import Export, completed, destination, export_harness, new_export_id
from tests.support.factories import file_meta_length, large_instance
from tests.support.ingest import Ingest
from tests.support.proc import memory_kib
from tests.support.storescp import Storescp


@pytest.fixture
def export(ingest: Ingest, tmp_path: Path) -> Iterator[Export]:
    with export_harness(ingest, tmp_path) as harness:
        yield harness


def test_a_1_gib_instance_is_streamed_to_the_destination(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    instance = large_instance(inbox, 1024 * 1024 * 1024)
    (key,) = export.put_instances([instance])
    with Storescp(tmp_path / "pacs") as pacs:
        process = export.start(export.config([destination("pacs", pacs.port)]))
        assert process.pid is not None
        baseline = memory_kib(process.pid, "VmRSS")
        request = ExportRequested(
            export_id=new_export_id(), destinations=("pacs",), object_keys=(key,)
        )
        with export.completions() as completions:
            export.publish(request)
            (message,) = completions.wait_for(1, timeout=300)
        peak = memory_kib(process.pid, "VmHWM")
        (received,) = pacs.received_files()
    result = completed(message)
    assert result.status is ExportStatus.SUCCEEDED
    assert result.destinations[0].instances[0].status is InstanceOutcome.SENT
    source = instance.path.stat().st_size - file_meta_length(_head(instance.path))
    assert received.stat().st_size - file_meta_length(_head(received)) == source
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 100, f"exporting 1 GiB grew the export process by {growth_mib:.0f} MiB"


def _head(path: Path) -> bytes:
    """The start of a file, with its whole file meta (not the whole 1 GiB file)."""
    with path.open("rb") as file:
        return file.read(4096)
