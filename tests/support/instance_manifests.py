"""Stored objects with an instance manifest beside them, as ingest leaves a long association."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

from pydicom.filereader import read_file_meta_info

from contracts.events import StoredInstance
from contracts.keys import manifest_key, object_key
from contracts.manifest import MANIFEST_MEDIA_TYPE, manifest_line
from gateway.objectstore import ObjectStore
from tests.support.factories import Instance


def listed(association_id: str, instance: Instance) -> StoredInstance:
    """The manifest line of ``instance``, stored under ``association_id``: what its file says."""
    meta = read_file_meta_info(instance.path)
    data = instance.path.read_bytes()
    return StoredInstance(
        sop_instance_uid=instance.uids.sop_instance,
        sop_class_uid=str(meta.MediaStorageSOPClassUID),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
        study_instance_uid=instance.uids.study,
        series_instance_uid=instance.uids.series,
        object_key=object_key(
            association_id, instance.uids.study, instance.uids.series, instance.uids.sop_instance
        ),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def put_with_manifest(
    store: ObjectStore,
    association_id: str,
    instances: Sequence[Instance],
    lines: Sequence[StoredInstance] | None = None,
) -> list[str]:
    """Store ``instances`` under ``association_id`` and a manifest of ``lines`` (by default,
    what the instances are); returns their keys."""
    entries = [listed(association_id, i) for i in instances] if lines is None else lines
    keys = []
    for instance, entry in zip(instances, entries, strict=True):
        with instance.path.open("rb") as data:
            store.put(entry.object_key, data, instance.path.stat().st_size)
        keys.append(entry.object_key)
    body = b"".join(manifest_line(entry) for entry in entries)
    store.put(
        manifest_key(association_id),
        io.BytesIO(body),
        len(body),
        content_type=MANIFEST_MEDIA_TYPE,
    )
    return keys
