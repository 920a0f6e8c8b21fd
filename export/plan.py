"""Pure decisions of an export: presentation-context batches and which failures to retry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID

from contracts.export import InstanceOutcome, InstanceResult

#: PS3.8: presentation context ids are odd numbers 1..255, so 128 contexts per association.
MAX_CONTEXTS_PER_ASSOCIATION = 128

#: A-ASSOCIATE-RJ result "rejected-transient" (PS3.8 9.3.4); "rejected-permanent" is 1.
REJECTED_TRANSIENT = 0x02


@dataclass(frozen=True)
class OutgoingInstance:
    """A stored object fetched to a local file, with what its file meta says about it."""

    object_key: str
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str

    @property
    def context(self) -> tuple[str, str]:
        """The exact (SOP class, transfer syntax) pair to propose: stored syntax, no conversion."""
        return (self.sop_class_uid, self.transfer_syntax_uid)


def failure(
    instance: OutgoingInstance, error: str, dicom_status: int | None = None
) -> InstanceResult:
    """The result of an instance that was not delivered, and why."""
    return InstanceResult(
        object_key=instance.object_key,
        sop_instance_uid=instance.sop_instance_uid,
        status=InstanceOutcome.FAILED,
        dicom_status=dicom_status,
        error=error,
    )


def is_known_transfer_syntax(uid: str) -> bool:
    return UID(uid).is_transfer_syntax


def _fits(contexts: dict[str, set[str]], instance: OutgoingInstance, limit: int) -> bool:
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
    instances: Sequence[OutgoingInstance], limit: int = MAX_CONTEXTS_PER_ASSOCIATION
) -> list[list[OutgoingInstance]]:
    """Group ``instances`` so that each group can go over one association.

    One association per group, so a request is split only when it needs more distinct
    (SOP class, transfer syntax) pairs than one association carries (``limit``), or when one
    SOP class comes both in a private transfer syntax and in another one. Each instance goes
    into the first group it fits; order within a group is kept.
    """
    groups: list[tuple[list[OutgoingInstance], dict[str, set[str]]]] = []
    for instance in instances:
        target = next((g for g in groups if _fits(g[1], instance, limit)), None)
        if target is None:
            target = ([], {})
            groups.append(target)
        target[0].append(instance)
        target[1].setdefault(instance.sop_class_uid, set()).add(instance.transfer_syntax_uid)
    return [members for members, _ in groups]


def rejection_is_transient(result: int) -> bool:
    """Whether an A-ASSOCIATE-RJ is worth retrying: only rejected-transient is."""
    return result == REJECTED_TRANSIENT


def describe_rejection(result: int, source: int, reason: int) -> str:
    kind = "transient" if rejection_is_transient(result) else "permanent"
    return f"association rejected ({kind}; result {result}, source {source}, reason {reason})"
