"""Export sends while it fetches: the association opens on the first window of objects, the
downloads stay a bounded window ahead of it, and a context met later gets an association of
its own. The objects come from a file store wrapped to watch or hold downloads; the destination
is a scripted pynetdicom SCP in this process."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import _config as pynetdicom_config

from contracts.export import ExportCompleted, ExportRequested, ExportStatus, InstanceOutcome
from contracts.keys import is_manifest_key, new_association_id, object_key
from export.fetch import FETCH_AHEAD, OPENING_WINDOW, FetchStream, WorkingSpace
from export.plan import InstanceMeta, OutgoingInstance
from gateway.objectstore import DICOM_MEDIA_TYPE, FileStore, Readable
from gateway.settings import StorageSettings
from gateway_client.testing import wait_until
from tests.support.exporters import exporter_to
from tests.support.factories import (
    CT_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    Instance,
    compressed_instance,
    ct_series,
)
from tests.support.scripted_scp import ScriptedScp

CONTEXTS = [
    (CT_IMAGE_STORAGE, [ExplicitVRLittleEndian]),
    (SECONDARY_CAPTURE_IMAGE_STORAGE, [ExplicitVRLittleEndian]),
]
#: How long a held download waits for what it waits for before it gives up (and the test fails).
HOLD_DEADLINE = 20.0
_export_ids = itertools.count()


class WatchedStore:
    """A file store that calls ``before_download`` with each key before fetching it."""

    def __init__(self, store: FileStore, before_download: Callable[[str], None]) -> None:
        self._store = store
        self._before_download = before_download

    @property
    def bucket(self) -> str:
        return self._store.bucket

    def ensure_ready(self) -> None:
        self._store.ensure_ready()

    def put(
        self,
        key: str,
        data: Readable,
        length: int,
        *,
        sha256: str | None = None,
        content_type: str = DICOM_MEDIA_TYPE,
    ) -> None:
        self._store.put(key, data, length)

    def download(self, key: str, target: Path) -> None:
        self._before_download(key)
        self._store.download(key, target)

    def keys(self, prefix: str) -> list[str]:
        return self._store.keys(prefix)

    def remove_prefix(self, prefix: str) -> int:
        return self._store.remove_prefix(prefix)

    def apply_retention(self, days: int | None) -> int:
        return self._store.apply_retention(days)


@pytest.fixture
def sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends files as stored (what export's start-up sets), put back afterwards."""
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)


def file_store(tmp_path: Path, instances: Sequence[Instance]) -> tuple[FileStore, list[str]]:
    store = FileStore(StorageSettings(backend="file", path=tmp_path / "objects", bucket="b"))
    association = new_association_id()
    keys = []
    for instance in instances:
        key = object_key(
            association, instance.uids.study, instance.uids.series, instance.uids.sop_instance
        )
        with instance.path.open("rb") as data:
            store.put(key, data, instance.path.stat().st_size)
        keys.append(key)
    return store, keys


def export(
    tmp_path: Path,
    store: WatchedStore | FileStore,
    keys: Sequence[str],
    port: int,
    *,
    ae_title: str = "SCRIPTED",
    to: str = "scp",
) -> ExportCompleted:
    """Export ``keys`` in this process to the destination ``scp`` at ``port``, no retries."""
    exporter = exporter_to("scp", ae_title, port, store, tmp_path / "export")
    request = ExportRequested(
        export_id=f"streaming-{next(_export_ids)}", destinations=(to,), object_keys=tuple(keys)
    )
    return asyncio.run(exporter.run(request))


def all_sent(done: ExportCompleted, instances: Sequence[Instance]) -> bool:
    (result,) = done.destinations
    return done.status is ExportStatus.SUCCEEDED and [
        (i.sop_instance_uid, i.status) for i in result.instances
    ] == [(i.uids.sop_instance, InstanceOutcome.SENT) for i in instances]


@pytest.mark.usefixtures("sending")
def test_instances_go_out_while_the_last_object_is_still_to_be_fetched(tmp_path: Path) -> None:
    series = ct_series(tmp_path / "in", 2 * FETCH_AHEAD)
    store, keys = file_store(tmp_path, series)
    held_until_arrival: list[bool] = []

    with ScriptedScp(CONTEXTS) as scp:

        def hold_the_last(key: str) -> None:
            # Fetching everything before sending would wait here for an arrival that never comes.
            if key == keys[-1]:
                try:
                    wait_until(lambda: bool(scp.stores), HOLD_DEADLINE, "first C-STORE")
                    held_until_arrival.append(True)
                except TimeoutError:
                    held_until_arrival.append(False)

        done = export(tmp_path, WatchedStore(store, hold_the_last), keys, scp.port)

    assert held_until_arrival == [True]
    assert all_sent(done, series)
    assert (scp.connections, scp.associations) == (1, 1)
    assert [s.sop_instance_uid for s in scp.stores] == [i.uids.sop_instance for i in series]


@pytest.mark.usefixtures("sending")
def test_no_more_than_the_window_is_on_disk_at_once(tmp_path: Path) -> None:
    series = ct_series(tmp_path / "in", 3 * FETCH_AHEAD)
    store, keys = file_store(tmp_path, series)
    work = tmp_path / "export" / "work"
    on_disk: list[int] = []

    def count(key: str) -> None:
        if not is_manifest_key(key):  # probed first, and none exists
            on_disk.append(1 + sum(1 for _ in work.rglob("*.dcm")))  # with the one starting now

    # A destination slower than the downloads: without a window they would all pile up.
    with ScriptedScp(CONTEXTS, store_delay=0.01) as scp:
        done = export(tmp_path, WatchedStore(store, count), keys, scp.port)

    assert all_sent(done, series)
    assert len(on_disk) == len(keys)
    assert max(on_disk) <= FETCH_AHEAD
    assert list(work.rglob("*.dcm")) == []


@pytest.mark.usefixtures("sending")
def test_a_context_first_met_beyond_the_first_window_gets_a_second_association(
    tmp_path: Path,
) -> None:
    series = ct_series(tmp_path / "in", OPENING_WINDOW + 2)
    late = compressed_instance(tmp_path / "in", ExplicitVRLittleEndian)
    instances = [*series, late]
    store, keys = file_store(tmp_path, instances)

    with ScriptedScp(CONTEXTS) as scp:
        done = export(tmp_path, store, keys, scp.port)

    assert all_sent(done, instances)
    assert scp.associations == 2
    first, second = (
        [s.sop_instance_uid for s in scp.stores if s.association == a]
        for a in dict.fromkeys(s.association for s in scp.stores)
    )
    assert (first, second) == ([i.uids.sop_instance for i in series], [late.uids.sop_instance])


@pytest.mark.usefixtures("sending")
def test_an_unreachable_destination_costs_one_window_of_downloads(
    tmp_path: Path, refusing_port: int
) -> None:
    series = ct_series(tmp_path / "in", 2 * FETCH_AHEAD)
    store, keys = file_store(tmp_path, series)
    fetched: list[str] = []

    done = export(tmp_path, WatchedStore(store, fetched.append), keys, refusing_port)

    (result,) = done.destinations
    assert (result.status, result.instances_failed) == (ExportStatus.FAILED, len(keys))
    assert [i.object_key for i in result.instances] == keys
    assert all(i.error is not None and "not reachable" in i.error for i in result.instances)
    # The file meta read for the association's contexts names its instances; the rest was
    # never read, and says so.
    assert [i.sop_instance_uid for i in result.instances] == [
        *(i.uids.sop_instance for i in series[:OPENING_WINDOW]),
        *[None] * (len(keys) - OPENING_WINDOW),
    ]
    instances_fetched = [key for key in fetched if not is_manifest_key(key)]
    assert OPENING_WINDOW <= len(instances_fetched) <= FETCH_AHEAD


def test_an_unknown_destination_fetches_nothing(tmp_path: Path) -> None:
    series = ct_series(tmp_path / "in", 3)
    store, keys = file_store(tmp_path, series)
    fetched: list[str] = []

    done = export(tmp_path, WatchedStore(store, fetched.append), keys, 104, to="nowhere")

    (result,) = done.destinations
    assert (result.name, result.status, result.instances_failed) == (
        "nowhere",
        ExportStatus.FAILED,
        3,
    )
    assert all(i.error == "unknown destination 'nowhere'" for i in result.instances)
    assert fetched == []


def test_a_first_window_with_nothing_readable_is_passed_over(tmp_path: Path) -> None:
    (instance,) = ct_series(tmp_path / "in", 1)
    store, (key,) = file_store(tmp_path, [instance])
    missing = [
        object_key(new_association_id(), "1.2.3", "1.2.3.4", f"1.2.3.4.{n}")
        for n in range(OPENING_WINDOW + 1)
    ]
    known: dict[str, InstanceMeta] = {}
    (tmp_path / "work").mkdir()

    async def first_window() -> tuple[list[OutgoingInstance], int]:
        with FetchStream(
            store, [*missing, key], tmp_path / "work", known, WorkingSpace()
        ) as stream:
            readable, unreadable = await stream.head()
            taken = [stream.take() for _ in range(3)]
            assert [type(t).__name__ for t in taken] == [
                "InstanceResult",
                "OutgoingInstance",
                "NoneType",
            ]
            return readable, len(unreadable)

    readable, skipped = asyncio.run(first_window())
    assert [r.object_key for r in readable] == [key]
    assert skipped == OPENING_WINDOW
    assert list(known) == [key]
    assert known[key].sop_instance_uid == instance.uids.sop_instance


def test_a_closed_stream_leaves_no_files(tmp_path: Path) -> None:
    series = ct_series(tmp_path / "in", FETCH_AHEAD + 4)
    store, keys = file_store(tmp_path, series)
    work = tmp_path / "work"
    work.mkdir()
    with FetchStream(store, keys, work, {}, WorkingSpace()) as stream:
        first = stream.take()
        assert isinstance(first, OutgoingInstance)
        assert first.path.exists()
        assert stream.untaken() == keys[1:]
        stream.release(first)
        assert not first.path.exists()
    # What was fetched ahead goes too, also what was still downloading at the close.
    wait_until(lambda: not list(work.rglob("*.dcm")), 10, "the stream's files removed")
    assert stream.take() is None
