"""What the fault suites check once every fault is over: what each sender saw against what
reached the broker and the bucket (tests/integration/test_ingest_faults.py for outages and
kills, test_ingest_power_loss.py for power cuts).
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts import AssociationReleased
from contracts.keys import MANIFEST_NAME, OBJECT_KEY_SUFFIX
from tests.support.amqp import ReceivedMessage
from tests.support.factories import file_meta_length
from tests.support.fault_senders import Outcome, Sent
from tests.support.ingest import Ingest, released


@dataclass
class Announced:
    """What reached the broker: each event id once, and how many were published twice."""

    by_id: dict[str, AssociationReleased]
    ids_by_calling: dict[str, set[str]]
    published_twice: int

    @classmethod
    def of(cls, messages: list[ReceivedMessage]) -> Announced:
        by_id: dict[str, AssociationReleased] = {}
        ids_by_calling: dict[str, set[str]] = {}
        for message in messages:
            data = released(message)
            assert message.message_id == data.association_id
            by_id[data.association_id] = data
            ids_by_calling.setdefault(data.calling_ae_title, set()).add(data.association_id)
        return cls(by_id, ids_by_calling, len(messages) - len(by_id))


def check_each_association(sent: dict[str, Sent], announced: Announced, summary: str) -> None:
    """Released: one event id; release unanswered: at most one; anything else: none. An
    event lists exactly the instances the sender sent."""
    assert set(announced.ids_by_calling) <= set(sent), f"events nobody sent for: {summary}"
    for calling, record in sent.items():
        ids = announced.ids_by_calling.get(calling, set())
        if record.outcome is Outcome.RELEASED:
            assert len(ids) == 1, f"{calling} released, event ids {ids}: {summary}"
        elif record.outcome is Outcome.RELEASE_UNANSWERED:
            assert len(ids) <= 1, f"{calling} has event ids {ids}: {summary}"
        else:
            assert not ids, f"{calling} {record.outcome} {record.detail}, announced: {summary}"
        for association_id in ids:
            assert [i.sop_instance_uid for i in announced.by_id[association_id].instances] == [
                d.sop_instance_uid for d in record.data_sets
            ], f"{calling}: instances differ: {summary}"


def check_the_bucket(
    ingest: Ingest, sent: dict[str, Sent], announced: Announced, summary: str
) -> list[str]:
    """Every object an event names, byte for byte as sent, and no other object. Returns the
    partial files the embedded file store holds besides: a put cut short by a crash leaves
    its file under a temporary name next to the object's, which no listing counts as an
    object and nothing serves, and nothing removes (docs/reliability.md, "Power loss")."""
    expected = {d.sop_instance_uid: d.encoded for s in sent.values() for d in s.data_sets}
    keys = {i.object_key for data in announced.by_id.values() for i in data.instances}
    objects = ingest.objects()
    partial = sorted(k for k in objects if not k.endswith((OBJECT_KEY_SUFFIX, MANIFEST_NAME)))
    for key in partial:
        del objects[key]
    orphans, missing = sorted(objects.keys() - keys), sorted(keys - objects.keys())
    assert not orphans, f"{len(orphans)} orphan objects, first {orphans[:5]}: {summary}"
    assert not missing, f"{len(missing)} objects missing, first {missing[:5]}: {summary}"
    for key, stored in objects.items():
        uid = key.rsplit("/", 1)[1].removesuffix(".dcm")
        assert stored[file_meta_length(stored) :] == expected[uid], f"{key} altered: {summary}"
    return partial
