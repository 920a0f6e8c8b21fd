"""Writing an instance manifest (:mod:`contracts.manifest`) to a file and storing it.

Used for an association's event (:mod:`ingest.announcer`) and a study's
(:mod:`ingest.study_watch`): the list is written page by page as it is read from the journal,
hashed on the way, so memory stays bounded by a page whatever the list's length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from contracts.events import InstanceManifest, StoredInstance
from contracts.manifest import MANIFEST_MEDIA_TYPE, manifest_line
from gateway.objectstore import ObjectStore


@dataclass(frozen=True)
class WrittenManifest:
    """A manifest file written: what an event says of it and of the list."""

    path: Path
    size: int
    sha256: str
    instance_count: int
    total_bytes: int
    #: Study of the first instance (an association event's subject), if any was listed.
    first_study_instance_uid: str | None


def write_manifest(path: Path, pages: Iterable[Iterable[StoredInstance]]) -> WrittenManifest:
    """Write every instance of ``pages`` to ``path``, one line each, in order."""
    digest = hashlib.sha256()
    size = count = total = 0
    first_study: str | None = None
    with path.open("wb") as out:
        for page in pages:
            for stored in page:
                line = manifest_line(stored)
                out.write(line)
                digest.update(line)
                size += len(line)
                count += 1
                total += stored.size
                first_study = first_study or stored.study_instance_uid
    return WrittenManifest(path, size, digest.hexdigest(), count, total, first_study)


def store_manifest(store: ObjectStore, key: str, written: WrittenManifest) -> InstanceManifest:
    """Store the written manifest under ``key``; returns the event's claim on it.

    Raises StorageUnavailable or OSError (retry later: storing it again is harmless).
    """
    with written.path.open("rb") as data:
        store.put(key, data, written.size, sha256=written.sha256, content_type=MANIFEST_MEDIA_TYPE)
    return InstanceManifest(object_key=key, size=written.size, sha256=written.sha256)
