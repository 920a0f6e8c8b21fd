"""End to end: ingest stores, export C-STOREs the stored objects as-is to dcmtk's storescp."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from contracts.cloudevent import export_completed_event_id
from contracts.export import ExportRequested, ExportStatus, InstanceOutcome
from tests.support import dcmtk
from tests.support.export import Export, completed, destination, export_harness, new_export_id
from tests.support.factories import (
    PRIVATE_TRANSFER_SYNTAX,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    Instance,
    awkward_instance,
    compressed_instance,
    ct_series,
    data_set_bytes,
    file_meta_length,
    odd_length_instance,
    private_sop_instance,
)
from tests.support.ingest import Ingest, released
from tests.support.part10_files import read_received
from tests.support.scripted_scp import ScriptedScp
from tests.support.settled import stop_export_with_nothing_left
from tests.support.storescp import Storescp

JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
COMPRESSED = [
    JPEG_2000_LOSSLESS,
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
]


@pytest.fixture
def export(ingest: Ingest, tmp_path: Path) -> Iterator[Export]:
    with export_harness(ingest, tmp_path) as harness:
        yield harness


def test_stored_objects_arrive_byte_for_byte_in_their_stored_syntax(
    ingest: Ingest, export: Export, inbox: Path, tmp_path: Path
) -> None:
    gateway = ingest.start()
    # awkward_instance: group lengths and a standard attribute with VR UN, which decoding and
    # re-encoding would lose.
    files = [*ct_series(inbox, 3), awkward_instance(inbox), private_sop_instance(inbox)]
    files += [compressed_instance(inbox, syntax) for syntax in COMPRESSED]
    with ingest.events() as events:
        dcmtk.dcmsend(gateway.host, gateway.port, [f.path for f in files], "GATEWAY").check()
        (message,) = events.wait_for(1)
    stored = released(message)
    objects = ingest.objects()
    assert stored.instance_count == len(files)

    request = ExportRequested(
        export_id=new_export_id(),
        destinations=("pacs",),
        association_id=stored.association_id,
        correlation={"study": "round trip", "n": 1},
    )
    with Storescp(tmp_path / "pacs") as pacs, export.completions() as completions:
        process = export.start(export.config([destination("pacs", pacs.port)]))
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=60)
        stop_export_with_nothing_left(process, export.ingest, export.queue, completions)
        received = {r.sop_instance_uid: r for r in map(read_received, pacs.received_files())}

    assert message.message_id == export_completed_event_id(request.export_id)
    assert message.content_type == "application/cloudevents+json"
    done = completed(message)
    assert (done.export_id, done.status, done.correlation) == (
        request.export_id,
        ExportStatus.SUCCEEDED,
        {"study": "round trip", "n": 1},
    )
    assert done.started_at <= done.finished_at
    (pacs_result,) = done.destinations
    assert (pacs_result.name, pacs_result.status) == ("pacs", ExportStatus.SUCCEEDED)
    assert (pacs_result.instances_sent, pacs_result.instances_failed) == (len(files), 0)
    assert {
        (i.object_key, i.sop_instance_uid, i.status, i.dicom_status, i.error)
        for i in pacs_result.instances
    } == {
        (i.object_key, i.sop_instance_uid, InstanceOutcome.SENT, 0x0000, None)
        for i in stored.instances
    }

    assert set(received) == {i.sop_instance_uid for i in stored.instances}
    for instance in stored.instances:
        stored_bytes = objects[instance.object_key]
        arrived = received[instance.sop_instance_uid]
        assert arrived.transfer_syntax_uid == instance.transfer_syntax_uid
        assert arrived.data_set == stored_bytes[file_meta_length(stored_bytes) :], (
            instance.transfer_syntax_uid
        )


def test_object_keys_request_sends_exactly_those_objects(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    series = ct_series(inbox, 4)
    keys = export.put_instances(series)
    wanted = [keys[2], keys[0]]
    request = ExportRequested(export_id=new_export_id(), destinations=("pacs",), object_keys=wanted)
    with Storescp(tmp_path / "pacs") as pacs, export.completions() as completions:
        export.start(export.config([destination("pacs", pacs.port)]))
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=30)
        received = [read_received(p) for p in pacs.received_files()]

    done = completed(message)
    assert done.status is ExportStatus.SUCCEEDED
    (pacs_result,) = done.destinations
    assert [(i.object_key, i.status) for i in pacs_result.instances] == [
        (key, InstanceOutcome.SENT) for key in wanted
    ]
    assert sorted(r.sop_instance_uid for r in received) == sorted(
        series[i].uids.sop_instance for i in (2, 0)
    )


def test_a_binary_mode_request_is_served_like_a_structured_one(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    series = ct_series(inbox, 2, seed=3)
    association_id = export.put_instances(series)[0].split("/")[0]
    request = ExportRequested(
        export_id=new_export_id(),
        destinations=("pacs",),
        association_id=association_id,
        correlation={"mode": "binary"},
    )
    with Storescp(tmp_path / "pacs") as pacs, export.completions() as completions:
        export.start(export.config([destination("pacs", pacs.port)]))
        export.publish(request, mode="binary")
        (message,) = completions.wait_for(1, timeout=30)
        received = pacs.received_files()

    done = completed(message)
    assert (done.export_id, done.status, done.correlation) == (
        request.export_id,
        ExportStatus.SUCCEEDED,
        {"mode": "binary"},
    )
    assert len(received) == 2


def test_a_destination_without_compression_gets_the_rest(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    """Instances are never converted: what the destination cannot take fails, with a reason."""
    series = ct_series(inbox, 3)
    jpeg_2000 = [compressed_instance(inbox, JPEG_2000_LOSSLESS, seed=s) for s in (1, 2)]
    keys = export.put_instances([*series, *jpeg_2000])
    request = ExportRequested(export_id=new_export_id(), destinations=("plain",), object_keys=keys)
    # "+xe" after the harness's "+xa": storescp takes the last of these options, so this
    # receiver accepts uncompressed transfer syntaxes only.
    with (
        Storescp(tmp_path / "plain", extra_args=("+xe",)) as plain,
        export.completions() as completions,
    ):
        process = export.start(export.config([destination("plain", plain.port)]))
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=30)
        received = sorted(r.sop_instance_uid for r in map(read_received, plain.received_files()))

    done = completed(message)
    assert done.status is ExportStatus.PARTIALLY_FAILED
    (result,) = done.destinations
    assert (result.status, result.instances_sent, result.instances_failed) == (
        ExportStatus.PARTIALLY_FAILED,
        3,
        2,
    )
    by_uid = {i.sop_instance_uid: i for i in result.instances}
    for instance in series:
        assert by_uid[instance.uids.sop_instance].status is InstanceOutcome.SENT
    for instance in jpeg_2000:
        outcome = by_uid[instance.uids.sop_instance]
        assert outcome.status is InstanceOutcome.FAILED
        assert outcome.dicom_status is None
        assert outcome.error is not None
        assert "transfer syntax" in outcome.error
        assert JPEG_2000_LOSSLESS in outcome.error
    assert received == sorted(i.uids.sop_instance for i in series)
    # A refused presentation context is an answer, not an outage: nothing is retried.
    assert "retried in" not in process.log_text()


def test_a_destination_accepting_none_of_the_contexts_fails_them_at_once(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    """Every context refused is the destination's answer, not an outage: no retry, and each
    instance names its SOP class and transfer syntax."""
    jpeg_2000 = [compressed_instance(inbox, JPEG_2000_LOSSLESS, seed=s) for s in (1, 2)]
    keys = export.put_instances(jpeg_2000)
    request = ExportRequested(export_id=new_export_id(), destinations=("plain",), object_keys=keys)
    with (
        Storescp(tmp_path / "plain", extra_args=("+xe",)) as plain,
        export.completions() as completions,
    ):
        # A retry would wait 3 s: the export's duration shows whether one happened.
        config = export.config(
            [destination("plain", plain.port)], retries=3, retry_backoff_seconds=[3.0]
        )
        process = export.start(config)
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=30)
        assert plain.received_files() == []

    done = completed(message)
    assert done.status is ExportStatus.FAILED
    (result,) = done.destinations
    assert (result.instances_sent, result.instances_failed) == (0, 2)
    for instance in result.instances:
        assert instance.status is InstanceOutcome.FAILED
        assert instance.error == (
            f"destination does not accept SOP class {jpeg_2000[0].uids.sop_class} in transfer "
            f"syntax {JPEG_2000_LOSSLESS} (sent as stored, never converted)"
        )
    assert (done.finished_at - done.started_at).total_seconds() < 3.0
    assert "retried in" not in process.log_text()


def test_one_sop_class_in_each_native_syntax_arrives_in_that_syntax(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    """Several contexts for one SOP class in one association: each instance uses its own."""
    syntaxes = [
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    ]
    instances = [
        ct_series(inbox / str(n), 1, transfer_syntax=syntax, seed=n)[0]
        for n, syntax in enumerate(syntaxes)
    ]
    instances += [awkward_instance(inbox, syntax, seed=1) for syntax in syntaxes[:3]]
    keys = export.put_instances(instances)
    request = ExportRequested(export_id=new_export_id(), destinations=("pacs",), object_keys=keys)
    with Storescp(tmp_path / "pacs") as pacs, export.completions() as completions:
        export.start(export.config([destination("pacs", pacs.port)]))
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=30)
        received = {r.sop_instance_uid: r for r in map(read_received, pacs.received_files())}

    assert completed(message).status is ExportStatus.SUCCEEDED
    assert set(received) == {i.uids.sop_instance for i in instances}
    for instance in instances:
        arrived = received[instance.uids.sop_instance]
        assert arrived.transfer_syntax_uid == instance.uids.transfer_syntax
        assert arrived.data_set == data_set_bytes(instance.path), instance.uids.transfer_syntax


def test_syntaxes_dcmtk_does_not_know_are_sent_as_stored(export: Export, inbox: Path) -> None:
    """HTJ2K and a private transfer syntax, each in a request of its own."""
    htj2k = compressed_instance(inbox, HTJ2K_LOSSLESS)
    private = compressed_instance(inbox, PRIVATE_TRANSFER_SYNTAX)
    contexts = [(SECONDARY_CAPTURE_IMAGE_STORAGE, [HTJ2K_LOSSLESS, PRIVATE_TRANSFER_SYNTAX])]
    assert_sent_as_stored(export, [[htj2k], [private]], contexts)


def test_one_sop_class_in_a_private_and_a_standard_syntax_is_sent_as_stored(
    export: Export, inbox: Path
) -> None:
    """Regression: with both contexts accepted on one association, pynetdicom's
    _get_valid_context asked the private UID ``is_compressed`` and raised ValueError
    ("UID is not a transfer syntax.") from send_c_store; the request never completed."""
    instances = [
        compressed_instance(inbox, ExplicitVRLittleEndian),
        compressed_instance(inbox, PRIVATE_TRANSFER_SYNTAX),
    ]
    contexts = [
        (SECONDARY_CAPTURE_IMAGE_STORAGE, [ExplicitVRLittleEndian, PRIVATE_TRANSFER_SYNTAX]),
    ]
    assert_sent_as_stored(export, [instances], contexts)


def assert_sent_as_stored(
    export: Export,
    requests: Sequence[Sequence[Instance]],
    contexts: Sequence[tuple[str, Sequence[str]]],
    timeout: float = 30,
) -> None:
    """Export each group of instances in a request of its own to a scripted SCP accepting
    ``contexts``: every request succeeds and every instance arrives as stored."""
    published = [
        ExportRequested(
            export_id=new_export_id(),
            destinations=("ai",),
            object_keys=export.put_instances(instances),
        )
        for instances in requests
    ]
    with ScriptedScp(contexts) as scp, export.completions() as completions:
        export.start(export.config([destination("ai", scp.port, scp.ae_title)]))
        export.publish(*published)
        messages = completions.wait_for(len(published), timeout=timeout)

    assert [completed(m).status for m in messages] == [ExportStatus.SUCCEEDED] * len(published)
    instances = [instance for group in requests for instance in group]
    arrived = {s.sop_instance_uid: s for s in scp.stores}
    assert set(arrived) == {i.uids.sop_instance for i in instances}
    for instance in instances:
        store = arrived[instance.uids.sop_instance]
        assert store.transfer_syntax_uid == instance.uids.transfer_syntax
        assert store.data_set == data_set_bytes(instance.path)


def test_an_odd_length_data_set_goes_alone_and_last(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    """DCMTK-based receivers abort on a data set of odd length (sent as stored, never padded):
    it must not take the instances after it down with it, on any attempt."""
    odd = odd_length_instance(inbox)
    series = ct_series(inbox, 3)
    keys = export.put_instances([odd, *series])
    request = ExportRequested(export_id=new_export_id(), destinations=("scp",), object_keys=keys)
    with Storescp(tmp_path / "scp") as scp, export.completions() as completions:
        config = export.config([destination("scp", scp.port)], retries=1)
        process = export.start(config)
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=60)
        received = sorted(r.sop_instance_uid for r in map(read_received, scp.received_files()))

    assert received == sorted(i.uids.sop_instance for i in series)
    (result,) = completed(message).destinations
    assert (result.instances_sent, result.instances_failed) == (3, 1)
    by_uid = {i.sop_instance_uid: i for i in result.instances}
    for instance in series:
        assert by_uid[instance.uids.sop_instance].status is InstanceOutcome.SENT
    refused = by_uid[odd.uids.sop_instance]
    assert refused.status is InstanceOutcome.FAILED
    length = len(data_set_bytes(odd.path))
    assert refused.error is not None
    assert f"odd length ({length} bytes" in refused.error
    # The same bytes would be refused again: not retried.
    assert "retried in" not in process.log_text()
