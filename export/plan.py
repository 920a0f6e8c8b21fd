"""Pure decisions of an export: presentation-context batches and which failures to retry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


def batches(
    instances: Sequence[OutgoingInstance], limit: int = MAX_CONTEXTS_PER_ASSOCIATION
) -> list[list[OutgoingInstance]]:
    """Split ``instances`` (in order) into groups that each need at most ``limit`` contexts.

    One association per group: a request is split only when it needs more distinct
    (SOP class, transfer syntax) pairs than one association can carry.
    """
    groups: list[list[OutgoingInstance]] = []
    contexts: set[tuple[str, str]] = set()
    for instance in instances:
        if not groups or (instance.context not in contexts and len(contexts) >= limit):
            groups.append([])
            contexts = set()
        groups[-1].append(instance)
        contexts.add(instance.context)
    return groups


def rejection_is_transient(result: int) -> bool:
    """Whether an A-ASSOCIATE-RJ is worth retrying: only rejected-transient is."""
    return result == REJECTED_TRANSIENT


def describe_rejection(result: int, source: int, reason: int) -> str:
    kind = "transient" if rejection_is_transient(result) else "permanent"
    return f"association rejected ({kind}; result {result}, source {source}, reason {reason})"
