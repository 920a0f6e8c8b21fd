"""More than one replica: two ingest processes (each its own spool and journal) behind one
address each, as a TCP load balancer would spread associations, and two export processes on
one request queue; one bucket, one exchange.

Each association is announced once, by the replica that received it, and each export request
is completed once, by whichever replica took it. An export replica killed in the middle of a
request leaves it unacknowledged: RabbitMQ hands it to the other replica, which has no record
of it in its own ledger and sends it again from the start, so the destination may receive an
instance twice; the completion is published once, by the replica that finished.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from contracts.export import ExportRequested, ExportStatus
from gateway_client.testing import GatewayProcess
from tests.support import dcmtk
from tests.support.export import Export, completed, destination, export_harness, new_export_id
from tests.support.factories import CT_IMAGE_STORAGE, ct_series
from tests.support.ingest import RABBITMQ_S3, Ingest, released
from tests.support.net import wait_until
from tests.support.scripted_scp import ScriptedScp
from tests.support.settled import wait_until_handed_on
from tests.support.storescp import Storescp

#: Associations spread over the two ingest replicas, alternately; each has 2 instances.
ASSOCIATIONS = 12


@pytest.fixture
def export(ingest: Ingest, tmp_path: Path) -> Iterator[Export]:
    with export_harness(ingest, tmp_path) as harness:
        yield harness


def replica_config(base: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``base`` with a spool and an export ledger of the replica's own under ``directory``."""
    config = {
        section: dict(values) if isinstance(values, dict) else values
        for section, values in base.items()
    }
    config["ingest"]["spool_dir"] = str(directory / "spool")
    config["export"]["state_dir"] = str(directory / "export-state")
    return config


@pytest.mark.backends(RABBITMQ_S3)
def test_two_replicas_of_each_hand_on_every_association_and_export_once(
    ingest: Ingest, export: Export, inbox: Path, tmp_path: Path
) -> None:
    with Storescp(tmp_path / "pacs") as pacs:
        base = export.config([destination("pacs", pacs.port)])
        configs = [replica_config(base, tmp_path / name) for name in ("a", "b")]
        receivers = [ingest.start(config) for config in configs]
        senders = [export.start(config) for config in configs]
        sent: dict[str, int] = {}
        with ingest.events() as events:
            for n in range(ASSOCIATIONS):
                series = ct_series(inbox / str(n), 2, seed=n)
                receiver = receivers[n % 2]
                dcmtk.storescu(
                    receiver.host, receiver.port, [s.path for s in series], "GATEWAY", f"CT{n:02d}"
                ).check()
                sent[f"CT{n:02d}"] = n % 2
            announced = [released(message) for message in events.wait_for(ASSOCIATIONS)]
            for config in configs:
                wait_until_handed_on(Path(config["ingest"]["spool_dir"]))
            events.assert_no_more(timeout=2)
        assert len({event.association_id for event in announced}) == ASSOCIATIONS
        assert {event.calling_ae_title for event in announced} == set(sent)
        for index, receiver in enumerate(receivers):  # each announced what it received
            mine = {
                event.association_id for event in announced if sent[event.calling_ae_title] == index
            }
            assert all(f"event {aid} published" in receiver.log_text() for aid in mine)

        requests = [
            ExportRequested(
                export_id=new_export_id(),
                destinations=("pacs",),
                association_id=event.association_id,
            )
            for event in announced
        ]
        with export.completions() as completions:
            export.publish(*requests)
            done = [completed(message) for message in completions.wait_for(len(requests), 90)]
            completions.assert_no_more(timeout=2)
    assert Counter(c.export_id for c in done) == Counter(r.export_id for r in requests)
    assert all(c.status is ExportStatus.SUCCEEDED for c in done)
    assert len(pacs.received_files()) == 2 * ASSOCIATIONS
    # RabbitMQ spreads the requests over both consumers.
    assert all(_completed_here(sender) for sender in senders)


def _completed_here(sender: GatewayProcess) -> int:
    """Exports this replica completed (its log line per request: ``export <id> succeeded``)."""
    return sender.log_text().count(" succeeded in ")


@pytest.mark.backends(RABBITMQ_S3)
def test_an_export_replica_killed_mid_request_leaves_it_to_the_other(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    keys = export.put_instances(ct_series(inbox, 3))
    request = ExportRequested(
        export_id=new_export_id(), destinations=("slow",), object_keys=tuple(keys)
    )
    contexts = [(CT_IMAGE_STORAGE, [ExplicitVRLittleEndian])]
    with (
        ScriptedScp(contexts, ae_title="SLOW", store_delay=1.0) as slow,
        export.completions() as completions,
    ):
        base = export.config([destination("slow", slow.port, slow.ae_title)])
        first = export.start(replica_config(base, tmp_path / "a"))
        export.publish(request)
        wait_until(lambda: slow.peak_storing > 0, 20, "the first replica is sending")
        first.kill()
        export.start(replica_config(base, tmp_path / "b"))
        (message,) = completions.wait_for(1, 60)
        completions.assert_no_more(timeout=3)
    result = completed(message)
    assert result.export_id == request.export_id
    assert result.status is ExportStatus.SUCCEEDED
    # Sent again from the start: the destination holds every instance, one of them perhaps twice.
    stored = Counter(store.sop_instance_uid for store in slow.stores)
    assert len(stored) == 3
    assert 3 <= sum(stored.values()) <= 4
