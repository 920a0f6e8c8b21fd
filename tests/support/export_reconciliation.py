"""What the export fault suites check once every fault is over: each request's completion
against what the destinations wrote (tests/integration/test_export_faults.py for outages and
kills, test_export_power_loss.py for power cuts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from contracts.export import ExportCompleted, ExportRequested, InstanceOutcome
from tests.support.amqp import ReceivedMessage
from tests.support.export import Export, completed
from tests.support.factories import ct_series, data_set_bytes
from tests.support.part10_files import read_received
from tests.support.storescp import Storescp


@dataclass
class Stored:
    """The objects requests pick from, and what each holds."""

    keys: list[str]
    uid_of: dict[str, str]
    data_sets: dict[str, bytes]

    @classmethod
    def put(cls, export: Export, inbox: Path, seed: int, count: int) -> Stored:
        """``count`` small CT instances of one association, stored as ingest would."""
        series = ct_series(inbox, count, rows=16, cols=16, seed=seed)
        keys = export.put_instances(series)
        return cls(
            keys,
            dict(zip(keys, (s.uids.sop_instance for s in series), strict=True)),
            {s.uids.sop_instance: data_set_bytes(s.path) for s in series},
        )


def check_completions(
    requests: list[ExportRequested],
    messages: list[ReceivedMessage],
    stored: Stored,
    received: dict[str, dict[str, bytes]],
    seed: int,
) -> Counter[str]:
    """Each request completed, with an outcome for every instance at every destination it
    named, and none reported sent that the destination did not write as stored. Returns the
    count of outcomes per destination."""
    done: dict[str, ExportCompleted] = {}
    for message in messages:
        completion = completed(message)
        done.setdefault(completion.export_id, completion)
    outcomes: Counter[str] = Counter()
    for request in requests:
        completion = done[request.export_id]
        assert {d.name for d in completion.destinations} == set(request.destinations)
        for result in completion.destinations:
            assert sorted(i.object_key for i in result.instances) == sorted(
                request.object_keys or ()
            ), f"seed {seed}: {request.export_id} {result.name}"
            for instance in result.instances:
                outcomes[f"{result.name} {instance.status}"] += 1
                if instance.status is InstanceOutcome.SENT:
                    uid = stored.uid_of[instance.object_key]
                    assert received[result.name].get(uid) == stored.data_sets[uid], (
                        f"seed {seed}: {instance.object_key} reported sent to {result.name} "
                        f"by {request.export_id}, but not received as stored"
                    )
    return outcomes


def received_by(destinations: Mapping[str, Storescp]) -> dict[str, dict[str, bytes]]:
    """Per destination name, SOP Instance UID to the data set bytes its storescp wrote."""
    return {
        name: {r.sop_instance_uid: r.data_set for r in map(read_received, scp.received_files())}
        for name, scp in destinations.items()
    }
