"""Associations against a slow scripted destination: the service-wide limit, one association per
request, idempotency of ``export_id``, and a ``kill -9`` in the middle of an export."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from contracts.cloudevent import export_completed_event_id
from contracts.export import ExportRequested, ExportStatus, InstanceOutcome
from contracts.keys import new_association_id, object_key
from tests.support.export import (
    EXPORT_DEFAULTS,
    Export,
    completed,
    destination,
    export_harness,
    new_export_id,
)
from tests.support.factories import (
    CT_IMAGE_STORAGE,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    compressed_instance,
    ct_series,
    derived_uid,
)
from tests.support.ingest import RABBITMQ_S3, Ingest
from tests.support.link import Link
from tests.support.net import wait_until
from tests.support.scripted_scp import ScriptedScp
from tests.support.settled import stop_export_with_nothing_left

#: What export's /readyz says while its consumer has no connection (export/intake.py).
LOST = "connection to RabbitMQ lost"
CONTEXTS = [
    (CT_IMAGE_STORAGE, [ExplicitVRLittleEndian]),
    (SECONDARY_CAPTURE_IMAGE_STORAGE, [ExplicitVRLittleEndian]),
]


@pytest.fixture
def export(ingest: Ingest, tmp_path: Path) -> Iterator[Export]:
    with export_harness(ingest, tmp_path) as harness:
        yield harness


def test_six_requests_never_open_more_than_max_associations(export: Export, inbox: Path) -> None:
    requests = [
        ExportRequested(
            export_id=new_export_id(),
            destinations=("slow",),
            object_keys=export.put_instances(ct_series(inbox / str(n), 2, seed=n)),
        )
        for n in range(6)
    ]
    assert (EXPORT_DEFAULTS["max_associations"], EXPORT_DEFAULTS["prefetch"]) == (2, 4)
    with ScriptedScp(CONTEXTS, store_delay=0.3) as slow, export.completions() as completions:
        process = export.start(export.config([destination("slow", slow.port, slow.ae_title)]))
        export.publish(*requests)
        messages = completions.wait_for(6, timeout=60)
        stop_export_with_nothing_left(process, export.ingest, export.queue, completions)

    results = [completed(m) for m in messages]
    assert sorted(r.export_id for r in results) == sorted(r.export_id for r in requests)
    assert all(r.status is ExportStatus.SUCCEEDED for r in results)
    assert len(slow.stores) == 12
    assert slow.associations == 6
    # Seen from the destination: exactly two at once (at most the limit, and really parallel).
    assert slow.peak_open == 2
    assert slow.peak_storing == 2


def test_a_slow_destination_leaves_a_slot_to_the_others(export: Export, inbox: Path) -> None:
    """Two requests to a destination answering every C-STORE after 3 s, then one to a healthy
    one: with the default 2 associations, the slow destination holds one and the healthy
    request goes on at once (before, both slow requests held both and it waited)."""
    slow_requests = [
        ExportRequested(
            export_id=new_export_id(),
            destinations=("slow",),
            object_keys=export.put_instances(ct_series(inbox / str(n), 1, seed=n)),
        )
        for n in range(2)
    ]
    healthy_request = ExportRequested(
        export_id=new_export_id(),
        destinations=("healthy",),
        object_keys=export.put_instances(ct_series(inbox / "healthy", 2, seed=9)),
    )
    with (
        ScriptedScp(CONTEXTS, ae_title="SLOW", store_delay=3.0) as slow,
        ScriptedScp(CONTEXTS, ae_title="HEALTHY") as healthy,
        export.completions() as completions,
    ):
        config = export.config(
            [
                destination("slow", slow.port, slow.ae_title),
                destination("healthy", healthy.port, healthy.ae_title),
            ]
        )
        export.start(config)
        export.publish(*slow_requests)
        wait_until(lambda: slow.peak_storing > 0, 20, "the slow destination is storing")
        export.publish(healthy_request)
        messages = completions.wait_for(3, timeout=60)

    order = [completed(m).export_id for m in messages]
    assert order[0] == healthy_request.export_id, order
    assert all(completed(m).status is ExportStatus.SUCCEEDED for m in messages)
    assert slow.peak_open == 1


def test_one_request_uses_one_association_for_all_its_instances(
    export: Export, inbox: Path
) -> None:
    instances = [*ct_series(inbox, 8), compressed_instance(inbox, ExplicitVRLittleEndian)]
    keys = export.put_instances(instances)
    request = ExportRequested(export_id=new_export_id(), destinations=("scp",), object_keys=keys)
    with ScriptedScp(CONTEXTS) as scp, export.completions() as completions:
        export.start(export.config([destination("scp", scp.port, scp.ae_title)]))
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=30)

    assert completed(message).status is ExportStatus.SUCCEEDED
    assert (scp.connections, scp.associations) == (1, 1)
    stores = scp.stores
    assert [s.sop_instance_uid for s in stores] == [i.uids.sop_instance for i in instances]
    assert {(s.association, s.calling_ae_title) for s in stores} == {
        (stores[0].association, "GWTEST-SCU")
    }


def test_a_repeated_export_id_republishes_the_completion_without_sending_again(
    export: Export, inbox: Path
) -> None:
    keys = export.put_instances(ct_series(inbox, 3))
    request = ExportRequested(export_id=new_export_id(), destinations=("scp",), object_keys=keys)
    with ScriptedScp(CONTEXTS) as scp, export.completions() as completions:
        process = export.start(export.config([destination("scp", scp.port, scp.ae_title)]))
        export.publish(request)
        (first,) = completions.wait_for(1, timeout=30)
        export.publish(request)  # a new event id, the same export id
        _, second = completions.wait_for(2, timeout=30)
        stop_export_with_nothing_left(process, export.ingest, export.queue, completions)

    expected_id = export_completed_event_id(request.export_id)
    assert first.message_id == second.message_id == expected_id
    assert completed(first) == completed(second)
    assert completed(first).status is ExportStatus.SUCCEEDED
    assert sorted(s.sop_instance_uid for s in scp.stores) == sorted(
        key.rsplit("/", 1)[1].removesuffix(".dcm") for key in keys
    )
    assert scp.associations == 1
    assert "was completed before" in process.log_text()


def test_an_export_id_reused_by_a_different_request_is_refused_on_its_own_routing_key(
    export: Export, inbox: Path
) -> None:
    first_keys = export.put_instances(ct_series(inbox / "first", 2, seed=1))
    other_keys = export.put_instances(ct_series(inbox / "other", 2, seed=2))
    first = ExportRequested(
        export_id=new_export_id(), destinations=("scp",), object_keys=first_keys
    )
    other = first.model_copy(update={"object_keys": tuple(other_keys), "reply_routing_key": "b"})
    with (
        ScriptedScp(CONTEXTS) as scp,
        export.completions() as completions,
        export.completions(["b"]) as replies,
    ):
        process = export.start(export.config([destination("scp", scp.port, scp.ae_title)]))
        export.publish(first)
        (done_first,) = completions.wait_for(1, timeout=30)
        export.publish(other)
        (refusal,) = replies.wait_for(1, timeout=30)
        export.publish(first)  # the first request again: still idempotent
        _, again = completions.wait_for(2, timeout=30)
        stop_export_with_nothing_left(process, export.ingest, export.queue, completions)

    assert completed(done_first).status is ExportStatus.SUCCEEDED
    assert completed(again) == completed(done_first)
    refused = completed(refusal)
    assert refused.status is ExportStatus.FAILED
    assert refusal.message_id != done_first.message_id
    (result,) = refused.destinations
    assert [i.object_key for i in result.instances] == other_keys
    for instance in result.instances:
        assert instance.error is not None
        assert "was already used by a different request" in instance.error
    # Nothing of the second request was sent.
    assert sorted(s.sop_instance_uid for s in scp.stores) == sorted(
        key.rsplit("/", 1)[1].removesuffix(".dcm") for key in first_keys
    )
    assert "the export_id was used by a different request" in process.log_text()


def test_a_crash_mid_export_is_redone_after_restart_and_completes_once(
    export: Export, inbox: Path
) -> None:
    series = ct_series(inbox, 10)
    keys = export.put_instances(series)
    request = ExportRequested(export_id=new_export_id(), destinations=("slow",), object_keys=keys)
    with ScriptedScp(CONTEXTS, store_delay=0.3) as slow, export.completions() as completions:
        process = export.start(export.config([destination("slow", slow.port, slow.ae_title)]))
        export.publish(request)
        slow.wait_for_stores(2, timeout=30)
        process.kill()
        assert completions.messages == []
        before_restart = len(slow.stores)
        assert before_restart < len(series)
        slow.store_delay = 0  # the redo only has to complete: no need to be slow any more
        process.start()  # same configuration, same state directory
        (message,) = completions.wait_for(1, timeout=60)
        stop_export_with_nothing_left(process, export.ingest, export.queue, completions)

    done = completed(message)
    assert done.status is ExportStatus.SUCCEEDED
    (result,) = done.destinations
    assert [(i.sop_instance_uid, i.status) for i in result.instances] == [
        (s.uids.sop_instance, InstanceOutcome.SENT) for s in series
    ]
    assert {s.sop_instance_uid for s in slow.stores} == {s.uids.sop_instance for s in series}
    # The redelivered request was sent in full, over a second association.
    assert slow.associations == 2
    assert len(slow.stores) >= len(series) + before_restart


def test_sigterm_mid_export_stops_within_the_grace_period_and_the_request_is_redone(
    export: Export, inbox: Path
) -> None:
    series = ct_series(inbox, 10)
    keys = export.put_instances(series)
    request = ExportRequested(export_id=new_export_id(), destinations=("slow",), object_keys=keys)
    grace = 0.5
    with ScriptedScp(CONTEXTS, store_delay=0.5) as slow, export.completions() as completions:
        config = export.config(
            [destination("slow", slow.port, slow.ae_title)], shutdown_grace_seconds=grace
        )
        process = export.start(config)
        export.publish(request)
        slow.wait_for_stores(2, timeout=30)
        signalled = time.monotonic()
        assert process.terminate(timeout=30) == 0
        stopped_after = time.monotonic() - signalled
        stores_at_exit = len(slow.stores)
        assert completions.messages == []
        slow.store_delay = 0  # the redo only has to complete: no need to be slow any more
        process.start()
        (message,) = completions.wait_for(1, timeout=60)
        stop_export_with_nothing_left(process, export.ingest, export.queue, completions)

    assert completed(message).status is ExportStatus.SUCCEEDED
    assert "not finished in the grace period: requeued" in process.log_text()
    # Left to the broker, the request must not go on being sent by the stopping process.
    assert stopped_after < grace + 2.0, f"exit took {stopped_after:.1f} s"
    assert stores_at_exit < len(series)


def test_completions_of_requests_finishing_together_are_all_published(
    export: Export, refusing_port: int
) -> None:
    """Completions published a few milliseconds apart while the publisher connects.

    Each request names objects that do not exist (1 to 16 of them), so it completes as soon as
    its keys are looked up, at staggered moments right after the service starts. Without a lock
    around the publisher's connecting, one publish closed the connection another was opening a
    channel on and that request was left unacknowledged with no completion; one round hit that
    about five times in six, so five rounds each start with a fresh process (a publisher not
    yet connected).
    """
    config = export.config([destination("pacs", refusing_port)], prefetch=16)
    process = export.start(config)
    for round_number in range(5):
        requests = [
            ExportRequested(
                export_id=new_export_id(),
                destinations=("pacs",),
                object_keys=tuple(
                    object_key(new_association_id(), *(derived_uid(n, k, p) for p in range(3)))
                    for k in range(n)
                ),
            )
            for n in range(1, 17)
        ]
        if round_number:
            process.terminate()
            process.start()
        with export.completions() as completions:
            export.publish(*requests)
            messages = completions.wait_for(len(requests), timeout=15)
        assert sorted(completed(m).export_id for m in messages) == sorted(
            r.export_id for r in requests
        )


@pytest.mark.backends(RABBITMQ_S3)
def test_a_binding_lost_with_the_exchange_is_declared_again(export: Export, inbox: Path) -> None:
    keys = export.put_instances(ct_series(inbox, 1))
    request = ExportRequested(export_id=new_export_id(), destinations=("scp",), object_keys=keys)
    with ScriptedScp(CONTEXTS) as scp:
        export.start(export.config([destination("scp", scp.port, scp.ae_title)]))
        export.recreate_exchange()
        with export.completions() as completions:  # bound to the new exchange
            with pytest.raises(aio_pika.exceptions.DeliveryError):
                export.publish(request)  # nothing bound: RabbitMQ returns it
            wait_until(lambda: _routed(export, request), 20, "the export queue bound again")
            (message,) = completions.wait_for(1, timeout=30)

    assert completed(message).status is ExportStatus.SUCCEEDED
    assert len(scp.stores) == 1


@pytest.mark.backends(RABBITMQ_S3)
def test_an_exchange_the_queue_cannot_be_bound_to_makes_export_not_ready(
    export: Export, refusing_port: int
) -> None:
    process = export.start(export.config([destination("pacs", refusing_port)]))
    export.recreate_exchange(aio_pika.ExchangeType.DIRECT)  # declared as topic: refused
    # /readyz asked, then the log: a check's problem is logged when the check runs.
    wait_until(
        lambda: (
            process.http_get("/readyz")[0] == 503
            and "check export-intake failing: export queue not bound" in process.log_text()
        ),
        20,
        "export reporting that its queue is not bound",
    )
    status, body = process.http_get("/readyz")
    assert (status, json.loads(body)["checks"]["export-intake"]) == (503, "failing")
    export.recreate_exchange()
    wait_until(lambda: process.http_get("/readyz")[0] == 200, 20, "export ready again")
    assert "bound to" in process.log_text()


def _routed(export: Export, request: ExportRequested) -> bool:
    try:
        export.publish(request)
    except aio_pika.exceptions.DeliveryError:
        return False
    return True


@pytest.mark.backends(RABBITMQ_S3)
def test_sigterm_while_the_broker_is_away_stops_promptly(
    export: Export, ingest: Ingest, refusing_port: int
) -> None:
    host, _, rest = ingest.amqp_url.split("@")[-1].partition(":")
    with Link(host, int(rest.partition("/")[0] or 5672)) as broker:
        config = export.config([destination("pacs", refusing_port)], shutdown_grace_seconds=1)
        credentials, _, path = ingest.amqp_url.partition("@")
        config["broker"]["url"] = f"{credentials}@{broker.endpoint}/{path.partition('/')[2]}"
        process = export.start(config)
        broker.cut()
        # The consumer sees its connection go (and reconnects, after a pause of aio-pika's).
        wait_until(
            lambda: (
                process.http_get("/readyz")[0] == 503
                and f"export-intake failing: {LOST}" in process.log_text()
            ),
            30,
            "export reporting its connection to RabbitMQ lost",
        )
        signalled = time.monotonic()
        assert process.terminate(timeout=30) == 0
    # Nothing is in flight: there is nothing to wait for but the broker, which may never return.
    assert time.monotonic() - signalled < 5
