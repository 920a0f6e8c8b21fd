"""The file object store on a real directory: a download is a snapshot of the object."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest

from contracts.keys import (
    association_prefix,
    manifest_key,
    new_association_id,
    object_key,
    parse_object_key,
)
from contracts.manifest import MANIFEST_MEDIA_TYPE
from export.fetch import request_keys
from gateway.errors import ObjectMissing
from gateway.objectstore import FileStore
from gateway.settings import StorageSettings

KEY = object_key(new_association_id(), "1.2.3", "1.2.3.4", "1.2.3.4.5")


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    store = FileStore(StorageSettings(backend="file", path=tmp_path / "objects"))
    store.ensure_ready()
    return store


def put(store: FileStore, data: bytes) -> None:
    store.put(KEY, io.BytesIO(data), len(data))


def test_a_download_keeps_the_object_as_it_was_when_taken(store: FileStore, tmp_path: Path) -> None:
    put(store, b"first version")
    target = tmp_path / "work.dcm"
    store.download(KEY, target)
    put(store, b"second version, stored later")
    assert target.read_bytes() == b"first version"
    again = tmp_path / "again.dcm"
    store.download(KEY, again)
    assert again.read_bytes() == b"second version, stored later"


def test_removing_a_download_leaves_the_object(store: FileStore, tmp_path: Path) -> None:
    put(store, b"object")
    target = tmp_path / "work.dcm"
    store.download(KEY, target)
    target.unlink()
    store.download(KEY, target)
    assert target.read_bytes() == b"object"


def test_a_missing_object_is_reported_as_missing(store: FileStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectMissing):
        store.download(KEY, tmp_path / "work.dcm")


def test_a_work_directory_on_another_file_system_gets_a_copy(
    store: FileStore, tmp_path: Path
) -> None:
    """No hard link across file systems (EXDEV): the download falls back to a copy."""
    other = Path("/dev/shm")  # noqa: S108  (a tmpfs on Linux: another file system)
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system to download to")
    put(store, b"object")
    with tempfile.TemporaryDirectory(dir=other) as directory:
        target = Path(directory) / "work.dcm"
        store.download(KEY, target)
        assert target.read_bytes() == b"object"
        assert target.stat().st_nlink == 1  # a copy, not a second name of the object


def test_removing_an_association_takes_its_objects_and_partial_files_only(
    store: FileStore, tmp_path: Path
) -> None:
    gone, kept = new_association_id(), new_association_id()
    for association_id in (gone, kept):
        for sop in ("1.2.3.4.5", "1.2.3.4.6"):
            key = object_key(association_id, "1.2.3", "1.2.3.4", sop)
            store.put(key, io.BytesIO(b"x"), 1)
    # What a put killed half-way leaves beside the objects.
    partial = tmp_path / "objects" / store.bucket / gone / "1.2.3" / "1.2.3.4" / "tmpabc"
    partial.write_bytes(b"half")
    assert store.remove_prefix(association_prefix(gone)) == 2
    assert not (tmp_path / "objects" / store.bucket / gone).exists()
    assert store.keys(association_prefix(gone)) == []
    assert len(store.keys(association_prefix(kept))) == 2


def test_an_associations_manifest_is_stored_and_listed_but_not_exported(store: FileStore) -> None:
    association_id = parse_object_key(KEY).association_id
    manifest = manifest_key(association_id)
    put(store, b"an instance")
    store.put(manifest, io.BytesIO(b"{}\n"), 3, content_type=MANIFEST_MEDIA_TYPE)
    assert store.keys(association_prefix(association_id)) == sorted([KEY, manifest])
    assert request_keys(store, association_id, None) == [KEY]
