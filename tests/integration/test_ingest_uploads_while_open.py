"""Instances are uploaded while their association is still open: at the release only the event
is left to do, and an association aborted after its uploads leaves no object behind."""

from __future__ import annotations

from pathlib import Path

from pynetdicom.association import Association

from gateway.dicom_status import Status
from gateway.netdicom.ae import PromptAE
from tests.support.factories import ct_series, data_set_bytes, file_meta_length
from tests.support.ingest import Ingest, released
from tests.support.net import wait_until
from tests.support.settled import wait_until_handed_on


def _open_association(ingest: Ingest, sop_class: str, transfer_syntax: str) -> Association:
    ae = PromptAE(ae_title="MODALITY")
    ae.add_requested_context(sop_class, [transfer_syntax])
    gateway = ingest.start()
    assoc = ae.associate(gateway.host, gateway.port, ae_title="GATEWAY")
    assert assoc.is_established
    return assoc


def test_instances_are_in_storage_before_their_association_is_released(
    ingest: Ingest, inbox: Path
) -> None:
    series = ct_series(inbox, 3)
    uids = series[0].uids
    with ingest.events() as events:
        assoc = _open_association(ingest, uids.sop_class, uids.transfer_syntax)
        try:
            for sent in series:
                assert assoc.send_c_store(sent.path).Status == Status.SUCCESS
            # Still open, and every instance is already stored.
            wait_until(lambda: len(ingest.objects()) == 3, 20, "all three objects are stored")
            events.assert_no_more()
        finally:
            assoc.release()
        (message,) = events.wait_for(1, timeout=20)
    event = released(message)
    stored = ingest.objects()
    assert set(stored) == {i.object_key for i in event.instances}
    for announced, sent in zip(event.instances, series, strict=True):
        body = stored[announced.object_key]
        assert body[file_meta_length(body) :] == data_set_bytes(sent.path)


def test_an_association_aborted_after_its_uploads_leaves_no_object(
    ingest: Ingest, inbox: Path
) -> None:
    series = ct_series(inbox, 3)
    uids = series[0].uids
    with ingest.events() as events:
        assoc = _open_association(ingest, uids.sop_class, uids.transfer_syntax)
        for sent in series:
            assert assoc.send_c_store(sent.path).Status == Status.SUCCESS
        wait_until(lambda: len(ingest.objects()) == 3, 20, "the objects are stored")
        assoc.abort()
        wait_until(lambda: ingest.objects() == {}, 20, "the aborted association's objects go")
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    assert ingest.spool_files() == []
