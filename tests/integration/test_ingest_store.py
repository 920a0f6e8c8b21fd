"""End to end: dcmtk and pynetdicom senders → `dicom-gateway ingest` → S3 objects + one event."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import _config as pynetdicom_config

from gateway.dicom_status import VERIFICATION_SOP_CLASS
from gateway.netdicom.ae import PromptAE
from gateway_client.testing import http_get
from tests.support import dcmtk
from tests.support.factories import (
    CT_IMAGE_STORAGE,
    JPIP_REFERENCED_DEFLATE,
    PRIVATE_TRANSFER_SYNTAX,
    awkward_instance,
    compressed_instance,
    ct_series,
    data_set_bytes,
    file_meta_length,
    jpip_referenced_instance,
    private_sop_instance,
)
from tests.support.ingest import Ingest, released
from tests.support.prometheus import metric
from tests.support.settled import wait_until_handed_on
from tests.support.wire import RecordingProxy

HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
COMPRESSED = [
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
]


def test_released_association_is_stored_and_announced_once(ingest: Ingest, inbox: Path) -> None:
    gateway = ingest.start()
    series = ct_series(inbox, 5)
    with ingest.events() as events:
        dcmtk.storescu(
            gateway.host, gateway.port, [i.path for i in series], "GATEWAY", "CT01"
        ).check()
        (message,) = events.wait_for(1)
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()

    data = released(message)
    assert message.routing_key == "association.released.default"
    assert message.content_type == "application/cloudevents+json"
    assert message.delivery_mode == 2
    assert message.message_id == data.association_id
    assert (data.called_ae_title, data.calling_ae_title, data.pipeline) == (
        "GATEWAY",
        "CT01",
        "default",
    )
    assert data.bucket == ingest.bucket
    assert data.instance_count == 5
    assert {i.sop_instance_uid for i in data.instances} == {s.uids.sop_instance for s in series}

    objects = ingest.objects()
    assert set(objects) == {i.object_key for i in data.instances}
    by_uid = {s.uids.sop_instance: s for s in series}
    for instance in data.instances:
        stored = objects[instance.object_key]
        assert instance.object_key == (
            f"{data.association_id}/{instance.study_instance_uid}/"
            f"{instance.series_instance_uid}/{instance.sop_instance_uid}.dcm"
        )
        assert instance.size == len(stored)
        assert instance.sha256 == hashlib.sha256(stored).hexdigest()
        meta = pydicom.dcmread(
            pydicom.filebase.DicomBytesIO(stored), stop_before_pixels=True
        ).file_meta
        assert meta.SourceApplicationEntityTitle == "CT01"
        assert meta.TransferSyntaxUID == by_uid[instance.sop_instance_uid].uids.transfer_syntax
        assert stored[file_meta_length(stored) :] == data_set_bytes(
            by_uid[instance.sop_instance_uid].path
        )
    assert data.total_bytes == sum(len(b) for b in objects.values())
    assert ingest.spool_files() == []
    log = gateway.log_text()
    assert f"association {data.association_id} released: called=GATEWAY calling=CT01" in log
    assert "instances=5" in log
    # No patient-identifying data in the logs (the factories name patients Test^PatientN).
    assert "Test^Patient" not in log
    assert "PID0" not in log


def test_implementation_uid_and_version_are_sent_as_configured(ingest: Ingest) -> None:
    gateway = ingest.start(
        implementation_class_uid="2.25.1234567", implementation_version_name="HOSPITAL_GW_1"
    )
    ae = PromptAE(ae_title="PYNETDICOM")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(gateway.host, gateway.port, ae_title="GATEWAY")
    try:
        assert assoc.is_established
        assert assoc.acceptor.implementation_class_uid == "2.25.1234567"
        assert assoc.acceptor.implementation_version_name == "HOSPITAL_GW_1"
        assert assoc.acceptor.ae_title == "GATEWAY"
    finally:
        assoc.release()


def test_each_called_ae_title_goes_to_its_pipeline(ingest: Ingest, inbox: Path) -> None:
    config = ingest.config()
    config["ingest"]["ae"] = [
        {"ae_title": "LUNG-AI", "pipeline": "lung"},
        {"ae_title": "BRAIN-AI", "pipeline": "brain"},
    ]
    gateway = ingest.start(config)
    lung = ct_series(inbox, 2, seed=1)
    brain = ct_series(inbox, 3, seed=2)
    with ingest.events() as events:
        dcmtk.storescu(gateway.host, gateway.port, [i.path for i in lung], "LUNG-AI").check()
        dcmtk.storescu(gateway.host, gateway.port, [i.path for i in brain], "BRAIN-AI").check()
        messages = events.wait_for(2)
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    by_key = {m.routing_key: released(m) for m in messages}
    assert set(by_key) == {"association.released.lung", "association.released.brain"}
    assert by_key["association.released.lung"].called_ae_title == "LUNG-AI"
    assert by_key["association.released.lung"].instance_count == 2
    assert by_key["association.released.brain"].pipeline == "brain"
    assert by_key["association.released.brain"].instance_count == 3


def test_private_sop_class_and_every_transfer_syntax_are_stored_as_sent(
    ingest: Ingest, inbox: Path
) -> None:
    gateway = ingest.start()
    files = [private_sop_instance(inbox), awkward_instance(inbox)]
    files += [compressed_instance(inbox, syntax) for syntax in COMPRESSED]
    with ingest.events() as events:
        dcmtk.dcmsend(gateway.host, gateway.port, [f.path for f in files], "GATEWAY").check()
        (message,) = events.wait_for(1)
    data = released(message)
    objects = ingest.objects()
    sent = {f.uids.sop_instance: f for f in files}
    assert {i.sop_instance_uid for i in data.instances} == set(sent)
    for instance in data.instances:
        source = sent[instance.sop_instance_uid]
        assert instance.transfer_syntax_uid == source.uids.transfer_syntax
        assert instance.sop_class_uid == source.uids.sop_class
        stored = objects[instance.object_key]
        assert stored[file_meta_length(stored) :] == data_set_bytes(source.path), (
            instance.transfer_syntax_uid
        )


@pytest.fixture
def raw_sending() -> Iterator[None]:
    """pynetdicom sends the file's data set bytes as they are (no decode, no re-encode)."""
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    yield
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous


@pytest.mark.usefixtures("raw_sending")
@pytest.mark.parametrize(
    "syntax", [HTJ2K_LOSSLESS, PRIVATE_TRANSFER_SYNTAX, JPIP_REFERENCED_DEFLATE]
)
def test_syntaxes_dcmtk_cannot_send_from_a_pynetdicom_sender(
    ingest: Ingest, inbox: Path, syntax: str
) -> None:
    gateway = ingest.start()
    if syntax == JPIP_REFERENCED_DEFLATE:  # deflated like 1.2.840.10008.1.2.1.99
        instance = jpip_referenced_instance(inbox)
    else:
        instance = compressed_instance(inbox, syntax)
    ae = PromptAE(ae_title="PYNETDICOM")
    ae.add_requested_context(instance.uids.sop_class, [syntax])
    with ingest.events() as events:
        assoc = ae.associate(gateway.host, gateway.port, ae_title="GATEWAY")
        assert assoc.is_established
        status = assoc.send_c_store(instance.path)
        assoc.release()
        assert status.Status == 0x0000
        (message,) = events.wait_for(1)
    (stored_instance,) = released(message).instances
    assert stored_instance.transfer_syntax_uid == syntax
    stored = ingest.objects()[stored_instance.object_key]
    assert stored[file_meta_length(stored) :] == data_set_bytes(instance.path)


def test_stored_data_set_equals_what_crossed_the_wire(ingest: Ingest, inbox: Path) -> None:
    """The honest reference: the bytes the sender put on the wire, recorded by a proxy."""
    gateway = ingest.start()
    files = [awkward_instance(inbox), *ct_series(inbox, 3, seed=7)]
    with ingest.events() as events, RecordingProxy(gateway.host, gateway.port) as proxy:
        dcmtk.storescu("127.0.0.1", proxy.port, [f.path for f in files], "GATEWAY").check()
        (message,) = events.wait_for(1)
        (requests,) = proxy.c_store_requests()
    on_wire = {r.affected_sop_instance_uid: r.data_set for r in requests}
    objects = ingest.objects()
    data = released(message)
    assert len(on_wire) == len(files) == data.instance_count
    for instance in data.instances:
        stored = objects[instance.object_key]
        assert stored[file_meta_length(stored) :] == on_wire[instance.sop_instance_uid]


def test_an_instance_sent_twice_is_stored_once(ingest: Ingest, inbox: Path) -> None:
    gateway = ingest.start()
    (instance,) = ct_series(inbox, 1)
    with ingest.events() as events:
        dcmtk.storescu(
            gateway.host, gateway.port, [instance.path, instance.path], "GATEWAY"
        ).check()
        (message,) = events.wait_for(1)
    data = released(message)
    assert data.instance_count == 1
    assert len(ingest.objects()) == 1


def test_echo_is_answered_and_announces_nothing(ingest: Ingest) -> None:
    gateway = ingest.start()
    with ingest.events() as events:
        dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY").check()
        # The echo's association is in the journal until ingest has decided about it.
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()


@pytest.mark.usefixtures("raw_sending")
def test_c_stores_of_an_established_association_take_the_fast_path(
    ingest: Ingest, inbox: Path
) -> None:
    """Every C-STORE of dcmtk's association, and those between C-ECHOs of pynetdicom's, is read
    on the fast path: none of them reaches pynetdicom's DIMSE decoder, and the C-ECHOs, which
    the fast path leaves to pynetdicom, are answered on the same association."""
    config = ingest.config()
    config["netdicom"] = "prompt"
    gateway = ingest.start(config)
    dcmtk_sent = ct_series(inbox, 3, seed=3)
    pynetdicom_sent = ct_series(inbox, 2, seed=4)
    ae = PromptAE(ae_title="PYNETDICOM")
    ae.add_requested_context(VERIFICATION_SOP_CLASS)
    ae.add_requested_context(CT_IMAGE_STORAGE, [pynetdicom_sent[0].uids.transfer_syntax])
    with ingest.events() as events:
        dcmtk.storescu(gateway.host, gateway.port, [i.path for i in dcmtk_sent], "GATEWAY").check()
        assoc = ae.associate(gateway.host, gateway.port, ae_title="GATEWAY")
        assert assoc.is_established
        statuses = [assoc.send_c_echo().Status]
        for instance in pynetdicom_sent:
            statuses += [assoc.send_c_store(instance.path).Status, assoc.send_c_echo().Status]
        assoc.release()
        assert statuses == [0x0000] * 5
        messages = events.wait_for(2)
    assert sorted(released(m).instance_count for m in messages) == [2, 3]
    _, text = http_get("127.0.0.1", gateway.http_port, "/metrics")
    by_title = {"called_ae": "GATEWAY"}
    assert metric(text, "dicom_gateway_fast_path_stores_total", by_title) == 5
    assert metric(text, "dicom_gateway_instances_received_total", by_title) == 5
