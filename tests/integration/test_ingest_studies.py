"""Stable-study events: one study sent over several associations becomes one event once quiet.

A CT scanner or PACS often sends a study a series per association. For an AE title with
``study_stable_seconds``, the gateway publishes ``study.stable.<pipeline>`` listing what it
holds of the study across associations once no association added to it for that long; later
instances give the next revision. Aborted associations never count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from contracts import (
    StudyStable,
    association_released_from_event,
    parse_event,
    study_stable_from_event,
)
from gateway.bus import dead_letter_queue
from gateway.dicom_status import Status
from gateway.netdicom.ae import PromptAE
from gateway_client import PipelineClient
from gateway_client.testing import delete_amqp_topology
from tests.support import dcmtk
from tests.support.amqp import ReceivedMessage
from tests.support.factories import Instance, ct_series, derived_uid
from tests.support.ingest import Ingest
from tests.support.net import wait_until
from tests.support.prometheus import metric
from tests.support.settled import studies_waiting, wait_until_handed_on

AE = "STUDIES"
PIPELINE = "studies"
QUIET_SECONDS = 2.0
BINDINGS = ("association.released.#", "study.stable.#")


def _config(ingest: Ingest, **changes: Any) -> dict[str, Any]:
    config = ingest.config(**changes)
    config["ingest"]["ae"] = [
        {"ae_title": AE, "pipeline": PIPELINE, "study_stable_seconds": QUIET_SECONDS}
    ]
    return config


def _send(host: str, port: int, instances: list[Instance]) -> None:
    dcmtk.storescu(host, port, [i.path for i in instances], AE).check()


@contextmanager
def _holding_the_study(host: str, port: int, instance: Instance) -> Iterator[None]:
    """An association that stored an instance of the study stays open, then aborts: while it
    is open the study is not quiet, whatever the time the other sends take; aborted, its
    instance never counts."""
    ae = PromptAE(ae_title="MODALITY")
    ae.add_requested_context(instance.uids.sop_class, [instance.uids.transfer_syntax])
    assoc = ae.associate(host, port, ae_title=AE)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(instance.path).Status == Status.SUCCESS
        yield
    finally:
        assoc.abort()


def _split(messages: list[ReceivedMessage]) -> tuple[list[str], list[tuple[str, StudyStable]]]:
    """Association ids of the association events, and (id, data) of the study events."""
    associations, studies = [], []
    for message in messages:
        event = parse_event(
            message.body, content_type=message.content_type, headers=message.headers
        )
        if (message.routing_key or "").startswith("study.stable."):
            studies.append((event.get_id(), study_stable_from_event(event)))
        else:
            associations.append(association_released_from_event(event).association_id)
    return associations, studies


def test_a_study_sent_over_three_associations_is_one_stable_event_then_a_revision(
    ingest: Ingest, inbox: Path
) -> None:
    study = derived_uid("studies", 1)
    series = [
        ct_series(inbox / f"s{n}", 2, rows=8, cols=8, study_uid=study, seed=n) for n in range(5)
    ]
    other = ct_series(inbox / "other", 1, rows=8, cols=8, seed=9)
    gateway = ingest.start(_config(ingest))
    with ingest.events(BINDINGS) as events:
        with _holding_the_study(gateway.host, gateway.port, series[3][0]):
            _send(gateway.host, gateway.port, series[0])
            _send(gateway.host, gateway.port, series[1] + other)
            _send(gateway.host, gateway.port, series[2])
        associations, studies = _split(events.wait_for(5, timeout=30 + QUIET_SECONDS))
        assert len(associations) == 3
        by_study = {data.study_instance_uid: (event_id, data) for event_id, data in studies}
        first_id, first = by_study[study]
        assert first.revision == 1
        assert first.called_ae_title == AE
        assert first.pipeline == PIPELINE
        sent = [i for s in series[:3] for i in s]
        # In the order stored: associations whose uploads end in another order than they were
        # released may change places.
        assert sorted(i.sop_instance_uid for i in first.instances) == sorted(
            i.uids.sop_instance for i in sent
        )
        assert {a.association_id for a in first.associations} == set(associations)
        assert first.instance_count == 6
        # What it lists is what is stored, byte for byte as its sizes say.
        stored = ingest.objects_named([i.object_key for i in first.instances])
        assert [len(stored[i.object_key]) for i in first.instances] == [
            i.size for i in first.instances
        ]
        _, other_study = by_study[other[0].uids.study]
        assert other_study.revision == 1
        assert [i.sop_instance_uid for i in other_study.instances] == [other[0].uids.sop_instance]

        _, metrics = gateway.http_get("/metrics")
        assert metric(metrics, "dicom_gateway_studies_waiting") == 0

        # A late series: a new event, the next revision, the whole list again.
        _send(gateway.host, gateway.port, series[4])
        _, later = _split(events.wait_for(7, timeout=30 + QUIET_SECONDS)[5:])
        ((second_id, second),) = later
        assert second.study_instance_uid == study
        assert second.revision == 2
        assert second_id != first_id
        assert sorted(i.sop_instance_uid for i in second.instances) == sorted(
            i.uids.sop_instance for s in (*series[:3], series[4]) for i in s
        )
        assert len(second.associations) == 4

        spool = ingest.workdir / "spool"
        wait_until_handed_on(spool)
        wait_until(lambda: studies_waiting(spool) == 0, 10, "no study waits")
        events.assert_no_more()


def test_a_long_study_list_travels_in_a_manifest_and_the_client_reads_it(
    ingest: Ingest, inbox: Path
) -> None:
    study = derived_uid("studies", 2)
    halves = [
        ct_series(inbox / f"h{n}", 30, rows=8, cols=8, study_uid=study, seed=n) for n in (1, 2)
    ]
    gateway = ingest.start(_config(ingest, max_event_bytes=16_384))
    consumer = f"{ingest.bucket}.studies"
    try:
        extra = ct_series(inbox / "aborted", 1, rows=8, cols=8, study_uid=study, seed=3)[0]
        received = asyncio.run(
            _receive_study(gateway.config_path, consumer, gateway, halves, extra)
        )
    finally:
        if not ingest.embedded:
            queues = [consumer, dead_letter_queue(consumer)]
            asyncio.run(delete_amqp_topology(ingest.amqp_url, ingest.exchange, queues))
    assert received.manifest is not None
    assert received.instance_count == 60
    assert sorted(i.sop_instance_uid for i in received.instances) == sorted(
        i.uids.sop_instance for half in halves for i in half
    )
    (manifest,) = ingest.objects_named([received.manifest.object_key]).values()
    assert len(manifest) == received.manifest.size


async def _receive_study(
    config_path: Path,
    consumer: str,
    gateway: Any,
    halves: list[list[Instance]],
    extra: Instance,
) -> StudyStable:
    async with PipelineClient.from_config(config_path, name="study-reader") as client:
        subscription = await client.subscribe_studies(consumer=consumer, pipeline=PIPELINE)
        with _holding_the_study(gateway.host, gateway.port, extra):
            for half in halves:
                await asyncio.to_thread(_send, gateway.host, gateway.port, half)
        received = await asyncio.wait_for(subscription.next(), 30 + QUIET_SECONDS)
        await received.ack()
        return received.event


def test_a_quiet_time_outlives_a_kill(ingest: Ingest, inbox: Path) -> None:
    study = derived_uid("studies", 3)
    series = ct_series(inbox, 2, rows=8, cols=8, study_uid=study, seed=3)
    config = _config(ingest)
    config["ingest"]["ae"][0]["study_stable_seconds"] = 4.0
    gateway = ingest.start(config)
    spool = ingest.workdir / "spool"
    with ingest.events(["study.stable.#"]) as events:
        _send(gateway.host, gateway.port, series)
        # Announced: the study now waits for its quiet time.
        wait_until(lambda: studies_waiting(spool) == 1, 20, "the study waits")
        gateway.kill()
        restarted = ingest.start(config)
        _, studies = _split(events.wait_for(1, timeout=30))
        ((_, stable),) = studies
        assert stable.revision == 1
        assert [i.sop_instance_uid for i in stable.instances] == [
            i.uids.sop_instance for i in series
        ]
        wait_until(lambda: studies_waiting(spool) == 0, 10, "no study waits")
        events.assert_no_more()
    restarted.stop()
