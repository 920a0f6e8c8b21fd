"""Pure decisions of an export: presentation-context batches and which failures to retry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydicom.uid import UID

from contracts.export import InstanceOutcome, InstanceResult

#: PS3.8: presentation context ids are odd numbers 1..255, so 128 contexts per association.
MAX_CONTEXTS_PER_ASSOCIATION = 128

#: A-ASSOCIATE-RJ result "rejected-transient" (PS3.8 9.3.4); "rejected-permanent" is 1.
REJECTED_TRANSIENT = 0x02


#: An exact (SOP class, transfer syntax) pair to propose.
Context = tuple[str, str]


@dataclass(frozen=True)
class InstanceMeta:
    """What a stored object's file meta says about it: enough to plan its association."""

    object_key: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    #: Bytes of the data set after the file meta (None: the file meta gives no group length).
    data_set_length: int | None = field(default=None, kw_only=True)

    @property
    def context(self) -> Context:
        """The exact (SOP class, transfer syntax) pair to propose: stored syntax, no conversion."""
        return (self.sop_class_uid, self.transfer_syntax_uid)

    @property
    def odd_length(self) -> bool:
        """Its data set has an odd length (PS3.5 7.1.1 wants even value lengths; ingest keeps
        what it received). DCMTK-based receivers abort the association on such a data set,
        so it travels in an association of its own, after the others."""
        return self.data_set_length is not None and self.data_set_length % 2 == 1


@dataclass(frozen=True)
class OutgoingInstance(InstanceMeta):
    """A stored object fetched to a local file."""

    path: Path
    #: Where the file's data set starts (after its file meta), as its sending reads it.
    data_set_offset: int


@dataclass(frozen=True)
class NotFetched:
    """A stored object that could not be fetched this time for a reason of this machine's (no
    room in the working directory): worth another attempt, like a destination that is down."""

    object_key: str
    reason: str


Planned = TypeVar("Planned", bound=InstanceMeta)


def failure(instance: InstanceMeta, error: str, dicom_status: int | None = None) -> InstanceResult:
    """The result of an instance that was not delivered, and why."""
    return InstanceResult(
        object_key=instance.object_key,
        sop_instance_uid=instance.sop_instance_uid,
        status=InstanceOutcome.FAILED,
        dicom_status=dicom_status,
        error=error,
    )


def unread(key: str, error: str) -> InstanceResult:
    """The result of an object whose file meta was never read (missing, unreadable, or not
    fetched at all because its destination could not be reached)."""
    return InstanceResult(
        object_key=key,
        sop_instance_uid=None,
        status=InstanceOutcome.FAILED,
        dicom_status=None,
        error=error,
    )


def is_known_transfer_syntax(uid: str) -> bool:
    return UID(uid).is_transfer_syntax


def _fits(contexts: dict[str, set[str]], instance: InstanceMeta, limit: int) -> bool:
    sop_class, syntax = instance.context
    syntaxes = contexts.get(sop_class, set())
    if syntax in syntaxes:
        return True
    if sum(len(s) for s in contexts.values()) >= limit:
        return False
    # pynetdicom cannot choose between two accepted contexts of one SOP class when either
    # transfer syntax is one it does not know (a private syntax): it raises instead.
    return not syntaxes or (
        is_known_transfer_syntax(syntax) and all(is_known_transfer_syntax(s) for s in syntaxes)
    )


def batches(
    instances: Sequence[Planned], limit: int = MAX_CONTEXTS_PER_ASSOCIATION
) -> list[list[Planned]]:
    """Group ``instances`` so that each group can go over one association.

    One association per group, so a request is split only when it needs more distinct
    (SOP class, transfer syntax) pairs than one association carries (``limit``), or when one
    SOP class comes both in a private transfer syntax and in another one. Each instance goes
    into the first group it fits; order within a group is kept.
    """
    groups: list[tuple[list[Planned], dict[str, set[str]]]] = []
    for instance in instances:
        target = next((g for g in groups if _fits(g[1], instance, limit)), None)
        if target is None:
            target = ([], {})
            groups.append(target)
        target[0].append(instance)
        target[1].setdefault(instance.sop_class_uid, set()).add(instance.transfer_syntax_uid)
    return [members for members, _ in groups]


def contexts(instances: Iterable[InstanceMeta]) -> list[Context]:
    """The distinct contexts of ``instances``, in order of first use: what to propose."""
    return list(dict.fromkeys(i.context for i in instances))


def opening_contexts(
    first: Sequence[InstanceMeta], limit: int = MAX_CONTEXTS_PER_ASSOCIATION
) -> list[Context]:
    """What to propose for a request whose file meta is known only for its ``first`` objects,
    so that its association opens before the rest is fetched: the contexts of the first batch
    of those. A later object needing another context waits for an association of its own."""
    planned = batches(first, limit)
    return contexts(planned[0]) if planned else []


def passes(
    keys: Sequence[str], known: Mapping[str, InstanceMeta]
) -> list[tuple[list[str], list[Context] | None]]:
    """The associations to send ``keys`` over, each as (its keys, the contexts to propose).

    Keys whose file meta is ``known`` are batched up front; the others go together in a pass
    whose contexts (None) are learnt from its first objects once fetched; last, each known
    instance of odd length alone (:attr:`InstanceMeta.odd_length`).
    """
    metas = [known[key] for key in keys if key in known]
    planned: list[tuple[list[str], list[Context] | None]] = [
        ([i.object_key for i in group], contexts(group))
        for group in batches([meta for meta in metas if not meta.odd_length])
    ]
    unknown = [key for key in keys if key not in known]
    if unknown:
        planned.append((unknown, None))
    planned += [([meta.object_key], [meta.context]) for meta in metas if meta.odd_length]
    return planned


def rejection_is_transient(result: int) -> bool:
    """Whether an A-ASSOCIATE-RJ is worth retrying: only rejected-transient is."""
    return result == REJECTED_TRANSIENT


def describe_rejection(result: int, source: int, reason: int) -> str:
    kind = "transient" if rejection_is_transient(result) else "permanent"
    return f"association rejected ({kind}; result {result}, source {source}, reason {reason})"
