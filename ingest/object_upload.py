"""One spooled instance into object storage: our file meta, then the data set as received.

The object is read from the spool file once, on its way to the store, and hashed as it goes:
its SHA-256 (the event's ``sha256``) costs no second pass.
"""

from __future__ import annotations

import hashlib
from io import RawIOBase
from pathlib import Path
from typing import BinaryIO

from gateway.objectstore import ObjectStore
from gateway.settings import IngestSettings
from ingest.journal import SpooledInstance, StoredObject
from ingest.part10 import InstanceIdentity, file_meta_bytes


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
    meta = file_meta_bytes(
        InstanceIdentity(
            sop_class_uid=instance.sop_class_uid,
            sop_instance_uid=instance.sop_instance_uid,
            study_instance_uid=instance.study_instance_uid,
            series_instance_uid=instance.series_instance_uid,
        ),
        instance.transfer_syntax_uid,
        source_ae_title,
        settings.implementation_class_uid,
        settings.implementation_version_name,
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
