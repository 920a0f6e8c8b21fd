"""Object storage behind one small interface: S3 (MinIO in production) or a local directory.

The S3 store is :mod:`gateway.s3store`; :func:`gateway.backends.open_store` opens the one the
settings choose. Every library error is converted to :class:`StorageUnavailable` by the store;
callers retry.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Final, Protocol

from contracts.keys import MANIFEST_NAME, OBJECT_KEY_SUFFIX, check_stored_key
from gateway.errors import ObjectMissing, StorageUnavailable, WorkingSpaceFull
from gateway.fsync import fsync_directory, make_directories
from gateway.settings import StorageSettings

#: Id of the bucket lifecycle rule that carries ``storage.retention_days`` on S3.
RETENTION_RULE_ID: Final = "dicom-gateway-retention"
SECONDS_PER_DAY: Final = 86_400
#: Media type of a stored instance (PS3.10 file); the default of every put.
DICOM_MEDIA_TYPE: Final = "application/dicom"


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def is_disk_full(exc: OSError) -> bool:
    """Whether a write failed for want of room (or of quota) on the local file system."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class ObjectStore(Protocol):
    #: What goes into the event's ``bucket`` field.
    @property
    def bucket(self) -> str: ...

    def ensure_ready(self) -> None:
        """Create the bucket (or directory) if missing; StorageUnavailable if unreachable."""

    def put(
        self,
        key: str,
        data: Readable,
        length: int,
        *,
        sha256: str | None = None,
        content_type: str = DICOM_MEDIA_TYPE,
    ) -> None:
        """Store ``length`` bytes read from ``data`` under ``key``; return only once durable.
        ``sha256``: the bytes' SHA-256 (hex) when the caller knows it already; ``content_type``
        is kept where the store keeps one (S3)."""

    def download(self, key: str, target: Path) -> None:
        """Stream the object to ``target``; ObjectMissing if there is no such object,
        WorkingSpaceFull if ``target``'s file system has no room for it."""

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""

    def remove_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``, durably (the caller may then forget the
        prefix); returns how many there were."""

    def apply_retention(self, days: int | None) -> int:
        """Keep objects ``days`` days after they were stored (None: for ever). S3 sets, changes
        or removes the bucket's lifecycle rule :data:`RETENTION_RULE_ID` (other rules stay) and
        the server expires the objects; the file store removes what is older. Returns how many
        objects this call removed; StorageUnavailable if the store cannot be changed."""


class FileStore:
    """Objects as files under ``root/<bucket>/``, written atomically and fsynced."""

    def __init__(self, settings: StorageSettings) -> None:
        self._root = settings.path / settings.bucket
        self._bucket = settings.bucket

    @property
    def bucket(self) -> str:
        return self._bucket

    def _path(self, key: str) -> Path:
        check_stored_key(key)  # refuses anything that could leave the root
        return self._root / key

    def download(self, key: str, target: Path) -> None:
        """A hard link where the file system allows it, otherwise a copy.

        :meth:`put` only ever replaces an object whole (a new file renamed over it), so the
        link keeps the object as it was when linked, like a copy, without reading it. The
        target shares the object's inode: callers only read it, then remove it.
        """
        source = self._path(key)
        try:
            try:
                os.link(source, target)
            except FileNotFoundError:
                raise
            except OSError:
                # Another file system, links not allowed (EPERM, EACCES under SELinux) or
                # not supported: a copy works wherever reading does.
                shutil.copyfile(source, target)
        except FileNotFoundError as exc:
            raise ObjectMissing(f"no object {key} under {self._root}") from exc
        except OSError as exc:
            if is_disk_full(exc):
                raise WorkingSpaceFull(f"copying {key} to {target}: {exc}") from exc
            raise StorageUnavailable(f"reading {key} failed: {exc}") from exc

    def _files_under(self, prefix: str) -> list[Path]:
        """Every file whose key starts with ``prefix``, partial ones included; only the
        prefix's own directory is walked, not the whole bucket."""
        parts = prefix.split("/")
        if ".." in parts:
            raise StorageUnavailable(f"{prefix!r} is not a key prefix")
        directory = self._root.joinpath(*parts[:-1])
        if not directory.is_dir():
            return []
        return [
            path
            for path in directory.rglob("*")
            if path.is_file() and path.relative_to(self._root).as_posix().startswith(prefix)
        ]

    def keys(self, prefix: str) -> list[str]:
        return sorted(
            path.relative_to(self._root).as_posix()
            for path in self._files_under(prefix)
            # Not the partial files of puts in progress (temporary names).
            if path.suffix == OBJECT_KEY_SUFFIX or path.name == MANIFEST_NAME
        )

    def remove_prefix(self, prefix: str) -> int:
        removed = 0
        changed: set[Path] = set()  # directories that lost an entry
        try:
            # Partial files too: a put cut short by a crash leaves one.
            for path in self._files_under(prefix):
                path.unlink(missing_ok=True)
                removed += path.suffix == ".dcm"
                changed.add(path.parent)
            # The directories the prefix's files were in, deepest first, once empty.
            directory = self._root.joinpath(*prefix.split("/")[:-1])
            if directory != self._root and directory.is_dir():
                nested = sorted(directory.rglob("*"), key=lambda p: -len(p.parts))
                for empty in [*nested, directory]:
                    with contextlib.suppress(OSError):  # not empty: a concurrent put
                        empty.rmdir()
                        changed.add(empty.parent)
            # Durable on return, as an S3 delete is: ingest forgets an aborted association
            # once its objects are removed, and files a power cut brought back would be
            # orphans nobody knows of (tests/integration/test_ingest_power_loss.py). A
            # removed directory goes, with all that was in it, once its parent is synced.
            for parent in changed:
                if parent.is_dir():
                    fsync_directory(parent)
        except OSError as exc:
            raise StorageUnavailable(f"removing {prefix} failed: {exc}") from exc
        return removed

    def apply_retention(self, days: int | None) -> int:
        """Remove the objects stored over ``days`` days ago (by their files' modification
        time: a put writes the file once), and the folders that leaves empty."""
        if days is None:
            return 0
        cutoff = time.time() - days * SECONDS_PER_DAY
        removed = 0
        try:
            for path in sorted(self._root.rglob("*"), key=lambda p: -len(p.parts)):
                if path.is_dir():
                    with contextlib.suppress(OSError):  # not empty
                        path.rmdir()
                elif path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += path.suffix == OBJECT_KEY_SUFFIX
        except OSError as exc:
            raise StorageUnavailable(f"expiring objects under {self._root} failed: {exc}") from exc
        return removed

    def ensure_ready(self) -> None:
        try:
            make_directories(self._root)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create {self._root}: {exc}") from exc

    def put(
        self,
        key: str,
        data: Readable,
        length: int,
        *,
        sha256: str | None = None,
        content_type: str = DICOM_MEDIA_TYPE,
    ) -> None:
        target = self._path(key)
        partial: Path | None = None
        try:
            # Synced in their parents: the object must survive a power cut once this returns.
            make_directories(target.parent)
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
                partial = Path(out.name)
                remaining = length
                while remaining:
                    chunk = data.read(min(remaining, 1024 * 1024))
                    if not chunk:
                        raise StorageUnavailable(f"{key}: source ended {remaining} bytes early")
                    out.write(chunk)
                    remaining -= len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
            partial = None
            fsync_directory(target.parent)
        except OSError as exc:
            raise StorageUnavailable(f"writing {key} failed: {exc}") from exc
        finally:
            if partial is not None:
                partial.unlink(missing_ok=True)
