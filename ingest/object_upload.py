"""One spooled instance into object storage, and an aborted association's objects out of it:
the work of the uploader's threads, each ending in an outcome for its dispatcher.

The object is our file meta, then the data set as received. A spool file written by the
C-STORE fast path is that object already, and its SHA-256 (the event's ``sha256``) was
computed as it arrived: it is sent as it is, and nothing hashes it again (the S3 store signs
with the known hash). Any other spool file is read once, after our file meta, and hashed as
it goes.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from io import RawIOBase
from pathlib import Path
from typing import BinaryIO

from contracts.keys import association_prefix
from gateway.errors import StorageUnavailable
from gateway.objectstore import ObjectStore
from gateway.settings import IngestSettings
from ingest.journal import SpooledInstance, StoredObject
from ingest.part10 import file_meta_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Uploaded:
    instance: SpooledInstance
    stored: StoredObject


@dataclass(frozen=True)
class UploadFailed:
    instance: SpooledInstance
    error: Exception


@dataclass(frozen=True)
class Removed:
    """The objects of an aborted association are deleted (``error`` None), or not."""

    association_id: str
    error: Exception | None


Outcome = Uploaded | UploadFailed | Removed


class Part10Stream(RawIOBase):
    """Our file meta followed by ``length`` data set bytes of a spool file, hashed as read."""

    def __init__(self, meta: bytes, spooled: BinaryIO, length: int) -> None:
        self._meta = meta
        self._meta_position = 0
        self._spooled = spooled
        self._remaining = length
        self.sha256 = hashlib.sha256()
        self.length = len(meta) + length

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        wanted = self.length if size is None or size < 0 else size
        out = b""
        if self._meta_position < len(self._meta):
            out = self._meta[self._meta_position : self._meta_position + wanted]
            self._meta_position += len(out)
        if len(out) < wanted and self._remaining > 0:
            data = self._spooled.read(min(wanted - len(out), self._remaining))
            if not data:
                raise OSError(f"spool file ended {self._remaining} bytes early")
            self._remaining -= len(data)
            out += data
        self.sha256.update(out)
        return out


def upload_instance(
    store: ObjectStore,
    instance: SpooledInstance,
    spooled_path: Path,
    source_ae_title: str,
    settings: IngestSettings,
) -> StoredObject:
    """Store the instance under its object key; returns what was stored."""
    if instance.spool_sha256 is not None:
        with spooled_path.open("rb") as spooled:
            size = instance.data_offset + instance.data_length
            store.put(instance.object_key, spooled, size, sha256=instance.spool_sha256)
        return StoredObject(
            instance.association_id,
            instance.sop_instance_uid,
            instance.spool_name,
            size,
            instance.spool_sha256,
        )
    meta = file_meta_bytes(
        instance.sop_class_uid,
        instance.sop_instance_uid,
        instance.transfer_syntax_uid,
        source_ae_title=source_ae_title,
        implementation_class_uid=settings.implementation_class_uid,
        implementation_version_name=settings.implementation_version_name,
    )
    with spooled_path.open("rb") as spooled:
        spooled.seek(instance.data_offset)
        stream = Part10Stream(meta, spooled, instance.data_length)
        store.put(instance.object_key, stream, stream.length)
    return StoredObject(
        instance.association_id,
        instance.sop_instance_uid,
        instance.spool_name,
        stream.length,
        stream.sha256.hexdigest(),
    )


def attempt_upload(
    store: ObjectStore,
    instance: SpooledInstance,
    spooled_path: Path,
    source_ae_title: str,
    settings: IngestSettings,
) -> Uploaded | UploadFailed:
    """:func:`upload_instance`, whatever happens, as an outcome."""
    try:
        stored = upload_instance(store, instance, spooled_path, source_ae_title, settings)
    except Exception as exc:  # noqa: BLE001 (the upload thread's boundary: the dispatcher decides)
        return UploadFailed(instance, exc)
    return Uploaded(instance, stored)


def attempt_removal(store: ObjectStore, association_id: str) -> Removed:
    """Delete every object of the association, as an outcome."""
    try:
        removed = store.remove_prefix(association_prefix(association_id))
    except StorageUnavailable as exc:
        return Removed(association_id, exc)
    log.debug("association %s: %d objects deleted", association_id, removed)
    return Removed(association_id, None)
