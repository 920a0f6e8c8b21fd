"""Fetching the objects of a request from storage into a working directory, one file each."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from contracts.export import InstanceOutcome, InstanceResult
from contracts.keys import association_prefix, is_valid_uid
from export.plan import OutgoingInstance
from gateway.errors import ObjectMissing
from gateway.objectstore import ObjectStore


def request_keys(
    store: ObjectStore, association_id: str | None, object_keys: tuple[str, ...] | None
) -> list[str]:
    if object_keys is not None:
        return list(object_keys)
    assert association_id is not None
    return store.keys(association_prefix(association_id))


#: Downloads in flight at once for one request: S3 answers each GET with latency of its own,
#: so a study of hundreds of small objects is fetched far faster in parallel.
FETCH_CONCURRENCY = 8


def fetch(
    store: ObjectStore, keys: list[str], workdir: Path
) -> tuple[list[OutgoingInstance], list[InstanceResult]]:
    """Download every key; returns what can be sent (in the order of ``keys``) and the keys
    that failed for good.

    Storage outages raise :class:`StorageUnavailable` (the request is retried later as a
    whole); a missing or unreadable object fails that instance only.
    """
    targets = [workdir / f"{index:06d}.dcm" for index in range(len(keys))]
    with ThreadPoolExecutor(FETCH_CONCURRENCY, thread_name_prefix="fetch") as pool:
        outcomes = list(pool.map(functools.partial(_fetch_one, store), keys, targets))
    ready = [o for o in outcomes if isinstance(o, OutgoingInstance)]
    failed = [o for o in outcomes if isinstance(o, InstanceResult)]
    return ready, failed


def _fetch_one(store: ObjectStore, key: str, target: Path) -> OutgoingInstance | InstanceResult:
    try:
        store.download(key, target)
        meta = read_file_meta_info(target)
    except ObjectMissing:
        return _failed(key, "object does not exist")
    except (InvalidDicomError, AttributeError, ValueError) as exc:
        return _failed(key, f"object is not a DICOM Part 10 file: {exc}")
    outgoing = OutgoingInstance(
        object_key=key,
        path=target,
        sop_class_uid=str(meta.get("MediaStorageSOPClassUID", "")),
        sop_instance_uid=str(meta.get("MediaStorageSOPInstanceUID", "")),
        transfer_syntax_uid=str(meta.get("TransferSyntaxUID", "")),
    )
    invalid = [
        name
        for name, uid in (
            ("SOP class", outgoing.sop_class_uid),
            ("SOP instance", outgoing.sop_instance_uid),
            ("transfer syntax", outgoing.transfer_syntax_uid),
        )
        if not is_valid_uid(uid)
    ]
    if invalid:
        return _failed(key, f"file meta has no valid {', '.join(invalid)} UID")
    return outgoing


def _failed(key: str, error: str) -> InstanceResult:
    return InstanceResult(
        object_key=key,
        sop_instance_uid=None,
        status=InstanceOutcome.FAILED,
        dicom_status=None,
        error=error,
    )
