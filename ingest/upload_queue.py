"""Which instance to upload next: one at a time from each association in turn. Pure.

Instances become uploadable while their association is still open, so a long association
would otherwise keep every upload slot busy and a short one behind it would wait for all of
its instances. Taking from each association in turn keeps their waits independent. Two copies
of one object key (a SOP instance sent twice in one association) are never uploaded at once:
the later upload must be the one that lands.

Not thread-safe: the uploader's dispatcher thread is its only user.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from ingest.journal import SpooledInstance


class UploadQueue:
    def __init__(self) -> None:
        #: Waiting instances per association, associations in the order they are served.
        self._waiting: OrderedDict[str, deque[SpooledInstance]] = OrderedDict()
        #: Object keys being uploaded, per association.
        self._busy: dict[str, set[str]] = {}
        #: (association, spool name) of every instance waiting or being uploaded.
        self._known: set[tuple[str, str]] = set()

    def add(self, instances: list[SpooledInstance]) -> int:
        """Queue those of ``instances`` not waiting or being uploaded already; returns how many."""
        added = 0
        for instance in instances:
            identity = (instance.association_id, instance.spool_name)
            if identity in self._known:
                continue
            self._known.add(identity)
            self._waiting.setdefault(instance.association_id, deque()).append(instance)
            added += 1
        return added

    def take(self) -> SpooledInstance | None:
        """The next instance to upload, now counted as being uploaded; None if none may start."""
        for association_id in list(self._waiting):
            waiting = self._waiting[association_id]
            busy = self._busy.setdefault(association_id, set())
            if waiting[0].object_key in busy:
                continue  # an earlier copy of that key is still on its way
            instance = waiting.popleft()
            busy.add(instance.object_key)
            if waiting:
                self._waiting.move_to_end(association_id)
            else:
                del self._waiting[association_id]
            return instance
        return None

    def finished(self, instance: SpooledInstance) -> None:
        """Its upload ended (stored, or given up)."""
        busy = self._busy.get(instance.association_id)
        if busy is not None:
            busy.discard(instance.object_key)
            if not busy:
                del self._busy[instance.association_id]
        self._known.discard((instance.association_id, instance.spool_name))

    def drop(self, association_id: str) -> None:
        """Forget the association's waiting instances (uploads in progress go on)."""
        for instance in self._waiting.pop(association_id, deque()):
            self._known.discard((association_id, instance.spool_name))

    def uploading(self, association_id: str) -> bool:
        return bool(self._busy.get(association_id))

    def holds(self, association_id: str) -> bool:
        """Whether instances of the association are waiting or being uploaded."""
        return association_id in self._waiting or self.uploading(association_id)

    def in_progress(self) -> int:
        return sum(len(keys) for keys in self._busy.values())

    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())
