"""Fetching the objects of a request from storage, a bounded window ahead of their sending."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import TracebackType

from pydicom.errors import InvalidDicomError

from contracts.export import InstanceResult
from contracts.keys import association_prefix, is_manifest_key, is_valid_uid
from export.announced import manifests_to_read, mismatch
from export.file_meta import read_file_meta
from export.plan import Context, InstanceMeta, NotFetched, OutgoingInstance, failure, unread
from gateway.errors import ObjectMissing, WorkingSpaceFull
from gateway.objectstore import ObjectStore

#: Downloads in flight at once for one stream: S3 answers each GET with latency of its own,
#: so a study of hundreds of small objects is fetched far faster in parallel.
FETCH_CONCURRENCY = 8
#: Objects of one stream on disk at once, at most (downloading, or fetched and not yet sent):
#: what bounds the working directory whatever the request's size (an instance may be hundreds
#: of MB), while the downloads keep ahead of the association. Instances go out in request
#: order, so this is also what lets downloads finishing out of order go on meanwhile.
FETCH_AHEAD = 32
#: Objects whose file meta decides what a first association proposes (see
#: :meth:`FetchStream.head`): fewer than :data:`FETCH_AHEAD`, so that downloads go on while
#: that association is being opened.
OPENING_WINDOW = 16

#: One object of a stream: fetched and readable, why it cannot be sent anywhere, or why it
#: cannot be fetched now.
Fetched = OutgoingInstance | InstanceResult | NotFetched


def request_keys(
    store: ObjectStore, association_id: str | None, object_keys: tuple[str, ...] | None
) -> list[str]:
    return request_objects(store, association_id, object_keys)[0]


def request_objects(
    store: ObjectStore, association_id: str | None, object_keys: tuple[str, ...] | None
) -> tuple[list[str], list[str]]:
    """The keys of the objects to send, and of the instance manifests that may describe them
    (:mod:`export.announced`)."""
    if object_keys is not None:
        return list(object_keys), manifests_to_read(object_keys)
    assert association_id is not None
    listed = store.keys(association_prefix(association_id))
    # The association's instance manifest (contracts.manifest) lists, it is no instance.
    return [key for key in listed if not is_manifest_key(key)], [
        key for key in listed if is_manifest_key(key)
    ]


class FetchStream:
    """Downloads ``keys`` in the background and hands them out in their order.

    At most ``ahead`` objects are on disk at once: a file counts from the start of its
    download until the sender hands it back with :meth:`release`, which deletes it. Every file
    meta read is recorded in ``known``, so that a later pass over the same keys (a retry, an
    object whose context was not proposed) can plan its association before fetching anything.
    An object ``announced`` (by an instance manifest) as another (SOP class, transfer syntax)
    than its file meta says comes out as its failed result, never as an instance to send.

    A storage outage raises :class:`StorageUnavailable` from :meth:`head` or :meth:`take` (the
    request is retried later as a whole); a missing or unreadable object comes out as its
    failed result, and one the working directory has no room for as :class:`NotFetched`
    (``space`` hears of each download's outcome, for ``/readyz``). :meth:`close` (also at the
    end of the ``with`` block) drops the downloads not started; those running delete their
    file when done, and :meth:`take` returns None.
    """

    def __init__(
        self,
        store: ObjectStore,
        keys: Sequence[str],
        workdir: Path,
        known: dict[str, InstanceMeta],
        space: WorkingSpace,
        *,
        announced: Mapping[str, Context] | None = None,
        ahead: int = FETCH_AHEAD,
    ) -> None:
        self._store = store
        self._announced = {} if announced is None else announced
        self._space = space
        self._keys = list(keys)
        self._dir = Path(tempfile.mkdtemp(dir=workdir))
        self._known = known
        self._ahead = ahead
        self._pool = ThreadPoolExecutor(
            max(1, min(FETCH_CONCURRENCY, ahead, len(self._keys))), thread_name_prefix="fetch"
        )
        self._lock = threading.Lock()
        self._queued: deque[tuple[str, Future[Fetched]]] = deque()
        self._next = 0  # index of the next key to download
        self._held = 0  # taken and not yet released
        self._closed = False
        with self._lock:
            self._top_up()

    def __enter__(self) -> FetchStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _top_up(self) -> None:
        """Start downloads while the window has room (the lock is held)."""
        while (
            not self._closed
            and self._next < len(self._keys)
            and len(self._queued) + self._held < self._ahead
        ):
            key = self._keys[self._next]
            target = self._dir / f"{self._next:06d}.dcm"
            self._next += 1
            fetch = partial(_fetch_one, announced=self._announced.get(key))
            self._queued.append(
                (key, self._pool.submit(fetch, self._store, key, target, self._space))
            )

    def _record(self, fetched: Fetched) -> None:
        if isinstance(fetched, OutgoingInstance):
            self._known[fetched.object_key] = InstanceMeta(
                object_key=fetched.object_key,
                sop_class_uid=fetched.sop_class_uid,
                sop_instance_uid=fetched.sop_instance_uid,
                transfer_syntax_uid=fetched.transfer_syntax_uid,
                data_set_length=fetched.data_set_length,
            )

    async def head(self) -> tuple[list[OutgoingInstance], list[InstanceResult | NotFetched]]:
        """The readable objects among the first :data:`OPENING_WINDOW`, once fetched, without
        taking them.

        A window with nothing readable in it is taken (its results come second) and the next
        one awaited, until something readable turns up or the keys run out.
        """
        unreadable: list[InstanceResult | NotFetched] = []
        while True:
            with self._lock:
                futures = [future for _, future in self._queued][:OPENING_WINDOW]
            first = [await asyncio.wrap_future(future) for future in futures]
            for fetched in first:
                self._record(fetched)
            readable = [f for f in first if isinstance(f, OutgoingInstance)]
            if readable or not first:
                return readable, unreadable
            with self._lock:
                for _ in first:
                    self._queued.popleft()
                self._top_up()
            unreadable += [f for f in first if not isinstance(f, OutgoingInstance)]

    def take(self) -> Fetched | None:
        """The next object, waiting for its download; None once every key was taken."""
        with self._lock:
            if self._closed or not self._queued:
                return None
            _, future = self._queued.popleft()
            self._held += 1
        try:
            fetched = future.result()
        except CancelledError:  # closed meanwhile
            return None
        except BaseException:
            self._give_back()
            raise
        self._record(fetched)
        if isinstance(fetched, OutgoingInstance) and self._closed:
            # Closed while this download was running: the sender stops here.
            self.release(fetched)
            return None
        if not isinstance(fetched, OutgoingInstance):
            self._give_back()  # no file
        return fetched

    def release(self, instance: OutgoingInstance) -> None:
        """The sender is done with ``instance``: delete its file, fetch the next."""
        instance.path.unlink(missing_ok=True)
        self._give_back()

    def _give_back(self) -> None:
        with self._lock:
            self._held -= 1
            self._top_up()

    def untaken(self) -> list[str]:
        """The keys not taken yet, in order."""
        with self._lock:
            return [key for key, _ in self._queued] + self._keys[self._next :]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            queued = [future for _, future in self._queued]
            self._queued.clear()
        for future in queued:
            if not future.cancel():
                future.add_done_callback(_discard)
        self._pool.shutdown(wait=False)


def _discard(future: Future[Fetched]) -> None:
    """Delete the file of a download that finished after its stream was closed."""
    if future.cancelled() or future.exception() is not None:
        return
    fetched = future.result()
    if isinstance(fetched, OutgoingInstance):
        fetched.path.unlink(missing_ok=True)


class WorkingSpace:
    """Whether the working directory had room for the latest download (for ``/readyz``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._problem: str | None = None

    def had_room(self) -> None:
        with self._lock:
            self._problem = None

    def full(self, reason: str) -> None:
        with self._lock:
            self._problem = reason

    def problem(self) -> str | None:
        with self._lock:
            return self._problem


def _fetch_one(
    store: ObjectStore, key: str, target: Path, space: WorkingSpace, *, announced: Context | None
) -> Fetched:
    try:
        store.download(key, target)
    except ObjectMissing:
        return unread(key, "object does not exist")
    except WorkingSpaceFull as exc:
        target.unlink(missing_ok=True)
        reason = f"no room in the working directory to fetch it: {exc}"
        space.full(reason)
        return NotFetched(key, reason)
    space.had_room()
    try:
        meta = read_file_meta(target)
    except (InvalidDicomError, AttributeError, ValueError) as exc:
        target.unlink(missing_ok=True)
        return unread(key, f"object is not a DICOM Part 10 file: {exc}")
    outgoing = OutgoingInstance(
        object_key=key,
        path=target,
        sop_class_uid=meta.sop_class_uid,
        sop_instance_uid=meta.sop_instance_uid,
        transfer_syntax_uid=meta.transfer_syntax_uid,
        data_set_length=target.stat().st_size - meta.data_set_offset,
        data_set_offset=meta.data_set_offset,
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
        target.unlink(missing_ok=True)
        return unread(key, f"file meta has no valid {', '.join(invalid)} UID")
    unlike = mismatch(announced, outgoing)
    if unlike is not None:
        target.unlink(missing_ok=True)
        return failure(outgoing, unlike)
    return outgoing
