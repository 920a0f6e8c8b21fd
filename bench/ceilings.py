"""The ceiling rows: what this machine's S3 and RabbitMQ allow, with dcmtk doing the DICOM.

- Ingest: storescp (``+B``) receives while a separate uploader puts each file to the same S3
  as soon as storescp has closed it (:class:`Uploader`, :data:`UPLOADERS` threads), then one
  message is published to RabbitMQ with a publisher confirm and awaited on a queue, the way
  the gateway's event is. Its first-byte-to-event time is what the gateway's is judged by.
- Export: the stored objects downloaded by :data:`UPLOADERS` threads from the same S3 to local
  files; the export ceiling is the slower of that and storescu sending the files from local
  disk (:func:`bench.stats.export_ceiling`).

Both verify byte for byte what they moved: the ingest row the objects in S3, the download row
the downloaded files.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self, cast

from minio import Minio
from pydicom.filereader import read_file_meta_info

from bench.backends import RabbitMqS3, new_bucket
from bench.datasets import DataSet
from bench.ingest_runs import Context, StoredRun, new_row, send_failures
from bench.inotify import ClosedFiles
from bench.integrity import compare
from bench.processes import busy_between, send_with_storescu, split
from bench.report import INGEST_CEILING, Row
from tests.support.factories import dataset_digest
from tests.support.proc import machine_busy_seconds

#: Upload (and download) threads, as many as the gateway's export downloads at once.
UPLOADERS = 8
DOWNLOAD = "download-s3"


class Uploader:
    """Puts every file closed in ``directory`` to ``bucket`` (key: its name) at once."""

    def __init__(self, client: Minio, bucket: str, directory: Path) -> None:
        self._client = client
        self._bucket = bucket
        self._directory = directory
        self._files = ClosedFiles(directory)
        self._pool = ThreadPoolExecutor(UPLOADERS, thread_name_prefix="bench-upload")
        self._submitted: dict[str, Future[None]] = {}
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="bench-watch", daemon=True)
        self.late = 0

    def __enter__(self) -> Self:
        self._watcher.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._watcher.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._files.close()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._submit(self._files.read(0.05))

    def _submit(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self._submitted:
                self._submitted[name] = self._pool.submit(self._put, name)

    def _put(self, name: str) -> None:
        self._client.fput_object(self._bucket, name, str(self._directory / name))

    def finish(self) -> list[str]:
        """Once the senders are done: upload what was not reported yet, wait for every upload
        (raising the first failure) and return the keys."""
        self._stop.set()
        self._watcher.join()
        self._submit(self._files.read(0))
        reported = len(self._submitted)
        self._submit(sorted(path.name for path in self._directory.iterdir() if path.is_file()))
        #: files found only by looking at the end (not reported as closed): uploaded late
        self.late = len(self._submitted) - reported
        for future in list(self._submitted.values()):
            future.result()
        return list(self._submitted)


def ingest_ceiling(
    context: Context, backend: RabbitMqS3, dataset: DataSet, associations: int
) -> Row:
    """storescu → storescp, each file uploaded as it completes, then one confirmed publish."""
    label = "ceiling: storescp" + (" --fork" if associations > 1 else "")
    label = f"{label} + {UPLOADERS} uploaders + publish"
    row = new_row(dataset, INGEST_CEILING, label, associations)
    directory = context.row_dir(dataset.spec.name, "ceiling", associations)
    bucket = new_bucket(f"{dataset.spec.name}-ceiling")
    routing_key = f"bench.ceiling.{secrets.token_hex(8)}"
    try:
        backend.prepare(directory, bucket)
        with (
            backend.bus(directory, routing_key) as bus,
            context.storescp(directory, fork=associations > 1) as scp,
            Uploader(backend.s3.client(), bucket, scp.output_dir) as uploader,
        ):
            send = send_with_storescu(
                context.dcmtk,
                scp.port,
                scp.ae_title,
                split(dataset.paths, associations),
                log_dir=directory,
                timeout=context.send_timeout(dataset),
            )
            keys = uploader.finish()
            bus.publish(routing_key, b"{}", routing_key)
            (message,) = bus.wait_for_count(1, context.send_timeout(dataset), "ceiling message")
        row.seconds = send.seconds
        row.machine_busy_seconds = send.machine_busy_seconds
        row.first_event_seconds = message.arrived - send.started
        row.event_seconds = message.arrived - send.finished
        if send.failures:
            row.note = send_failures(send)
        if uploader.late:
            context.progress(f"ceiling: {uploader.late} file(s) not reported by inotify")
        uids = [_sop_instance_uid(scp.output_dir / key) for key in keys]
        digests = backend.digests(directory, bucket, keys)
        row.verdict = compare(dataset.expected(), zip(uids, digests, strict=True))
    finally:
        shutil.rmtree(directory / "received", ignore_errors=True)
        backend.delete(directory, bucket)
    return row


def _sop_instance_uid(path: Path) -> str:
    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


def s3_download(context: Context, stored: StoredRun, dataset: DataSet) -> Row:
    """The objects of the stored association fetched from S3 by :data:`UPLOADERS` threads."""
    backend = stored.backend
    if not isinstance(backend, RabbitMqS3):
        raise TypeError("the download ceiling needs S3")
    row = new_row(dataset, DOWNLOAD, f"S3 download, {UPLOADERS} threads (no DICOM)", 1)
    directory = context.row_dir(dataset.spec.name, "export", "download")
    bucket = str(stored.config["storage"]["bucket"])
    client = backend.s3.client()
    instances = [instance for event in stored.events for instance in event.instances]

    def fetch(index: int) -> None:
        response = client.get_object(bucket, instances[index].object_key)
        try:
            with (directory / f"{index}.dcm").open("wb") as target:
                shutil.copyfileobj(cast(BinaryIO, response), target, 1 << 20)
        finally:
            response.close()
            response.release_conn()

    try:
        busy_before = machine_busy_seconds()
        started = time.monotonic()
        with ThreadPoolExecutor(UPLOADERS, thread_name_prefix="bench-download") as pool:
            list(pool.map(fetch, range(len(instances))))
        row.seconds = time.monotonic() - started
        row.machine_busy_seconds = busy_between(busy_before)

        def digest(index: int) -> tuple[str, str]:
            with (directory / f"{index}.dcm").open("rb") as stream:
                return instances[index].sop_instance_uid, dataset_digest(stream)[0]

        row.verdict = compare(dataset.expected(), map(digest, range(len(instances))))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return row
