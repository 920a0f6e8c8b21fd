"""Quirky data sets, stored as received or refused: ``ingest.malformed_instances``.

"store" (the default): an instance whose data set has no valid Study or Series Instance UID, or
whose encoding cannot be followed to its end, is stored byte for byte as it crossed the wire,
answered with success, and flagged in the event (``well_formed: false`` and a reason), under a
key with ``unknown`` in place of a missing UID. "refuse": it is answered 0xC000 and never
stored. Either way a data set whose SOP Instance UID is not the command's gets 0xA900.

dcmtk's storescu (a real peer) sends the quirks it can read; the rest, which no dcmtk tool can
send as they are, go out through a raw sender.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from contracts import StoredInstance
from gateway.dicom_status import Status
from tests.support import dcmtk
from tests.support.factories import CT_IMAGE_STORAGE, file_meta_length, small_data_set
from tests.support.factories.quirky import (
    NAME_IN_A_UID,
    SOP_INSTANCE_UID,
    Quirk,
    quirks,
    write_quirk,
)
from tests.support.factories.raw import uid_element
from tests.support.ingest import EMBEDDED, Ingest, released
from tests.support.raw_scu import DataSet, RawAssociation
from tests.support.settled import wait_until_handed_on
from tests.support.wire import RecordingProxy

MODES = ("store", "refuse")
#: storescu -v: one line per C-STORE response, in the order sent.
_RESPONSE = re.compile(r"^I: Received Store Response \((?P<status>[^)]*)\)", re.MULTILINE)


def _check_flagged(stored: StoredInstance, quirk: Quirk, association_id: str) -> None:
    """The event says what the quirk is, and the key does not need the missing UIDs."""
    assert stored.well_formed is False, quirk.name
    assert stored.reason is not None
    assert quirk.reason in stored.reason, (quirk.name, stored.reason)
    assert "DOE" not in stored.reason  # never a value beyond a UID's digits and dots
    assert (stored.study_instance_uid, stored.series_instance_uid) == (quirk.study, quirk.series)
    assert stored.object_key == (
        f"{association_id}/{quirk.study or 'unknown'}/{quirk.series or 'unknown'}/"
        f"{quirk.uids.sop_instance}.dcm"
    )


@pytest.mark.parametrize("mode", MODES)
def test_storescu_quirks_are_stored_as_sent_or_refused(
    ingest: Ingest, tmp_path: Path, mode: str
) -> None:
    gateway = ingest.start(malformed_instances=mode)
    sent = [q for q in quirks(0) if q.dcmtk_sends]
    good = small_data_set(100)
    files = [write_quirk(tmp_path / "in", q) for q in sent]
    good_file = write_quirk(
        tmp_path / "in",
        Quirk("well-formed", good.uids, good.encoded, None, None, "", dcmtk_sends=True),
    )
    with ingest.events() as events, RecordingProxy(gateway.host, gateway.port) as proxy:
        # -nh: by default storescu stops at the first refused instance and releases, so the
        # rest of the study is never sent (why "store" is the default).
        result = dcmtk.storescu(
            "127.0.0.1",
            proxy.port,
            [*files, good_file],
            "GATEWAY",
            "CT01",
            extra_args=["-v", "-nh"],
        )
        statuses = _RESPONSE.findall(result.stdout + result.stderr)
        assert len(statuses) == len(sent) + 1, result
        (message,) = events.wait_for(1)
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
        (requests,) = proxy.c_store_requests()
    on_wire = {r.affected_sop_instance_uid: r.data_set for r in requests}
    assert len(on_wire) == len(sent) + 1, result
    data = released(message)
    objects = ingest.objects()
    by_uid = {i.sop_instance_uid: i for i in data.instances}
    if mode == "store":
        assert statuses == ["Success"] * (len(sent) + 1), result
        assert sorted(by_uid) == sorted(on_wire)
        for quirk in sent:
            _check_flagged(by_uid[quirk.uids.sop_instance], quirk, data.association_id)
    else:
        assert statuses == ["Error: CannotUnderstand"] * len(sent) + ["Success"], result
        assert sorted(by_uid) == [good.uids.sop_instance]
    well_formed = by_uid[good.uids.sop_instance]
    assert (well_formed.well_formed, well_formed.reason) == (True, None)
    assert sorted(objects) == sorted(i.object_key for i in data.instances)
    for instance in data.instances:  # byte for byte as the data set crossed the wire
        stored = objects[instance.object_key]
        assert stored[file_meta_length(stored) :] == on_wire[instance.sop_instance_uid]
    log = gateway.log_text()
    assert "DOE" not in log
    if mode == "store":  # (refusing, the invalid study UID before it is named)
        assert NAME_IN_A_UID[:6] in log  # the invalid UID is quoted up to its digits and dots


def _store_all(gateway_host: str, gateway_port: int, stores: list[DataSet]) -> list[int]:
    async def run() -> list[int]:
        association = await RawAssociation.open(
            gateway_host, gateway_port, "GATEWAY", "RAW", [str(CT_IMAGE_STORAGE)]
        )
        try:
            statuses = [await asyncio.wait_for(association.store(s), 30) for s in stores]
            await association.release()
        finally:
            await association.close()
        return statuses

    return asyncio.run(run())


@pytest.mark.parametrize("mode", MODES)
def test_raw_quirks_are_stored_as_sent_or_refused_and_a_mismatch_never_is(
    ingest: Ingest, mode: str
) -> None:
    gateway = ingest.start(malformed_instances=mode)
    every = quirks(200)
    good, well_formed_mismatch = small_data_set(300), small_data_set(302)
    invalid_sop_instance = small_data_set(303)
    invalid_sop_instance_encoded = b"".join(
        uid_element(tag, "../../x") if tag == SOP_INSTANCE_UID else encoded
        for tag, encoded in invalid_sop_instance.elements
    )
    # Cut short after its SOP Instance UID, and sent under another one in the command.
    mismatched = next(q for q in every if q.name == "cut short in its pixel data")
    other_uid = small_data_set(301).uids.sop_instance
    stores = [
        *(DataSet(q.uids.sop_class, q.uids.sop_instance, q.encoded) for q in every),
        DataSet(mismatched.uids.sop_class, other_uid, mismatched.encoded),
        DataSet(good.uids.sop_class, other_uid, well_formed_mismatch.encoded),
        DataSet(
            good.uids.sop_class,
            invalid_sop_instance.uids.sop_instance,
            invalid_sop_instance_encoded,
        ),
        DataSet(good.uids.sop_class, good.uids.sop_instance, good.encoded),
    ]
    with ingest.events() as events:
        statuses = _store_all(gateway.host, gateway.port, stores)
        (message,) = events.wait_for(1)
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    mismatch = Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    if mode == "store":
        # An invalid SOP Instance UID in the data set is not the command's either.
        expected = [*([Status.SUCCESS] * len(every)), mismatch, mismatch, mismatch]
    else:  # as before the setting: the encoding, then the UIDs' validity, are judged first
        refused = Status.CANNOT_UNDERSTAND
        expected = [*([refused] * len(every)), refused, mismatch, refused]
    assert statuses == [*expected, Status.SUCCESS]
    data = released(message)
    by_uid = {i.sop_instance_uid: i for i in data.instances}
    sent = {s.sop_instance_uid: s.encoded for s in stores}
    if mode == "store":
        assert sorted(by_uid) == sorted(
            [*(q.uids.sop_instance for q in every), good.uids.sop_instance]
        )
        for quirk in every:
            _check_flagged(by_uid[quirk.uids.sop_instance], quirk, data.association_id)
    else:
        assert list(by_uid) == [good.uids.sop_instance]
    assert other_uid not in by_uid
    objects = ingest.objects()
    assert sorted(objects) == sorted(i.object_key for i in data.instances)
    for instance in data.instances:
        stored = objects[instance.object_key]
        assert stored[file_meta_length(stored) :] == sent[instance.sop_instance_uid]
    log = gateway.log_text()
    assert "C-STORE refused with 0xA900" in log
    if mode == "store":
        assert "stored as received, not well-formed" in log


@pytest.mark.backends(EMBEDDED)
def test_worker_processes_store_quirks_as_received(ingest: Ingest, tmp_path: Path) -> None:
    # The worker processes' receive path, with the default (store).
    gateway = ingest.start(workers=2)
    quirk = next(q for q in quirks(400) if q.name == "no study UID")
    path = write_quirk(tmp_path / "in", quirk)
    with ingest.events() as events:
        dcmtk.storescu(gateway.host, gateway.port, [path], "GATEWAY", "CT01").check()
        (message,) = events.wait_for(1)
    data = released(message)
    (stored,) = data.instances
    _check_flagged(stored, quirk, data.association_id)
    objects = ingest.objects()
    assert list(objects) == [stored.object_key]
    assert len(objects[stored.object_key]) == stored.size
