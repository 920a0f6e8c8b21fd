"""Association policies and bad input, read from the sender's side."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import _config as pynetdicom_config

from gateway.dicom_status import VERIFICATION_SOP_CLASS
from gateway.netdicom.ae import PromptAE
from gateway_client.testing import gateway_environment
from tests.support import dcmtk
from tests.support.dcmtk import Rejection
from tests.support.factories import CT_IMAGE_STORAGE, ct_series
from tests.support.ingest import Ingest, released
from tests.support.net import wait_until
from tests.support.settled import wait_until_handed_on
from tests.support.small_fs import small_filesystem

VERIFICATION = "1.2.840.10008.1.1"

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
COLOR_PALETTE_FIND = "1.2.840.10008.5.1.4.39.2"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"


def test_unknown_called_ae_title_is_rejected_permanently(ingest: Ingest) -> None:
    gateway = ingest.start()
    result = dcmtk.echoscu(gateway.host, gateway.port, called_ae="NOT-OURS")
    assert result.rejection == Rejection(1, 1, 7)
    assert "reason=called-ae-not-recognised" in gateway.log_text()


def test_unknown_calling_ae_title_is_rejected_when_sources_are_enforced(ingest: Ingest) -> None:
    config = ingest.config(reject_unknown_sources=True)
    config["sources"] = [{"name": "ct", "ae_title": "CT01", "host": "127.0.0.1"}]
    gateway = ingest.start(config)
    assert dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY", "STRANGER").rejection == Rejection(
        1, 1, 3
    )
    assert dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY", "CT01").ok


def test_allowed_sources_of_an_ae_title(ingest: Ingest) -> None:
    config = ingest.config()
    config["sources"] = [{"name": "ct", "ae_title": "CT01"}, {"name": "mr", "ae_title": "MR01"}]
    config["ingest"]["ae"] = [
        {"ae_title": "CT-AI", "pipeline": "ct", "allowed_sources": ["ct"]},
        {"ae_title": "ANY-AI", "pipeline": "any"},
    ]
    gateway = ingest.start(config)
    assert dcmtk.echoscu(gateway.host, gateway.port, "CT-AI", "CT01").ok
    assert dcmtk.echoscu(gateway.host, gateway.port, "CT-AI", "MR01").rejection == Rejection(
        1, 1, 3
    )
    assert dcmtk.echoscu(gateway.host, gateway.port, "ANY-AI", "MR01").ok


def test_spool_above_watermark_is_temporary_congestion(ingest: Ingest) -> None:
    # Any real filesystem holds more than a millionth of a percent (so it is never ready).
    gateway = ingest.start(storage_watermark_percent=0.000001, until="listening")
    result = dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY")
    assert result.rejection == Rejection(2, 3, 1)


@pytest.fixture
def scu() -> Iterator[PromptAE]:
    ae = PromptAE(ae_title="HOLDER")
    ae.add_requested_context(VERIFICATION)
    yield ae
    ae.shutdown()


def test_one_calling_ae_title_or_address_holds_at_most_its_own_limit(
    ingest: Ingest, scu: PromptAE
) -> None:
    gateway = ingest.start(max_associations_per_calling_ae=1)
    held = scu.associate(gateway.host, gateway.port, ae_title="GATEWAY")  # calling HOLDER
    try:
        assert held.is_established
        refused = dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY", "HOLDER")
        assert refused.rejection == Rejection(2, 3, 2)  # transient, local limit exceeded
        assert dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY", "OTHER").ok
    finally:
        held.release()
    assert dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY", "HOLDER").ok
    assert "reason=source-limit-exceeded" in gateway.log_text()
    gateway.stop()

    gateway = ingest.start(max_associations_per_address=1)  # every peer here is 127.0.0.1
    held = scu.associate(gateway.host, gateway.port, ae_title="GATEWAY")
    try:
        refused = dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY", "OTHER")
        assert refused.rejection == Rejection(2, 3, 2)
    finally:
        held.release()
    assert dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY", "OTHER").ok


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_association_limit_counts_real_associations_not_port_probes(
    ingest: Ingest, scu: PromptAE, workers: int
) -> None:
    # With two worker processes the two held associations are on different workers (the
    # main process hands each connection to the one with fewer): the limit is global.
    gateway = ingest.start(max_associations=2, workers=workers)
    # Port probes of a load balancer: TCP connections that never send an A-ASSOCIATE-RQ.
    probes = [socket.create_connection((gateway.host, gateway.port)) for _ in range(3)]
    try:
        held = [scu.associate(gateway.host, gateway.port, ae_title="GATEWAY") for _ in range(2)]
        assert all(assoc.is_established for assoc in held), "probes took association slots"
        third = dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY")
        assert third.rejection == Rejection(2, 3, 2)
        assert "reason=local-limit-exceeded" in gateway.log_text()
        held[0].release()
        wait_until(
            lambda: dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY").ok,
            10,
            "a slot is free again after a release",
        )
        held[1].release()
    finally:
        for probe in probes:
            probe.close()


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n", id="http"),
        pytest.param(b"\x01\x00" + struct.pack(">I", 0x7FFFFFFF) + b"\x00" * 64, id="huge-length"),
        pytest.param(b"\x01\x00\x00\x00\x00\x44\x00\x01", id="truncated-pdu"),
        pytest.param(
            b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x02\x01\x03", id="p-data-before-association"
        ),
    ],
)
def test_garbage_on_the_port_aborts_only_that_connection(ingest: Ingest, garbage: bytes) -> None:
    gateway = ingest.start()
    with ingest.events() as events:
        with socket.create_connection((gateway.host, gateway.port), timeout=10) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass  # an abort may come as a reset
        assert dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY").ok
        assert gateway.is_running()
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()


def _with_uid(source: Path, target: Path, keyword: str, value: str) -> Path:
    """A copy of ``source`` whose data set has ``keyword`` = ``value`` (an invalid UID, say),
    while the file meta keeps the valid SOP Instance UID the sender puts in its command."""
    ds = pydicom.dcmread(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the invalid value is the point of the test
        setattr(ds, keyword, value)
        ds.save_as(target, enforce_file_format=True)
    return target


@pytest.fixture
def raw_sending() -> Iterator[None]:
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    yield
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous


@pytest.mark.usefixtures("raw_sending")
@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("SOPInstanceUID", "../../x"),
        ("StudyInstanceUID", "../../../etc"),
        ("SeriesInstanceUID", "1.2.3/4"),
        ("StudyInstanceUID", "1." + "2" * 80),
        ("SeriesInstanceUID", "1.2.3.DOE^JOHN"),  # what a patient's name looks like
    ],
)
def test_invalid_uids_fail_that_instance_only(
    ingest: Ingest, inbox: Path, tmp_path: Path, keyword: str, value: str
) -> None:
    # Refused, as ingest.malformed_instances = "refuse" does; the default, "store", is
    # tests/integration/test_ingest_malformed.py's (and the SOP Instance UID case below).
    gateway = ingest.start(malformed_instances="refuse")
    good, template = ct_series(inbox, 2)
    bad = _with_uid(template.path, tmp_path / "bad.dcm", keyword, value)
    ae = PromptAE(ae_title="PYNETDICOM")
    ae.add_requested_context(good.uids.sop_class, [good.uids.transfer_syntax])
    with ingest.events() as events:
        assoc = ae.associate(gateway.host, gateway.port, ae_title="GATEWAY")
        assert assoc.is_established
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pynetdicom reads the bad UID from the file meta too
            bad_status = assoc.send_c_store(bad)
        good_status = assoc.send_c_store(good.path)
        assoc.release()
        (message,) = events.wait_for(1)
    assert bad_status.Status & 0xF000 == 0xC000
    assert good_status.Status == 0x0000
    assert [i.sop_instance_uid for i in released(message).instances] == [good.uids.sop_instance]
    assert "is not a valid UID" in gateway.log_text()
    assert "DOE" not in gateway.log_text()  # never the value itself beyond digits and dots
    assert all(".." not in key and key.count("/") == 3 for key in ingest.objects())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "bad.dcm",
            "in",
            "spool",
            *(["embedded"] if ingest.embedded else []),
            *(p.name for p in tmp_path.iterdir() if p.name.startswith("gateway-")),
        ]
    )


@pytest.fixture
def small_spool(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB filesystem for the spool, so that a disk really fills up (needs root)."""
    with small_filesystem(tmp_path / "spool", "4m") as spool:
        yield spool


def test_only_storage_and_verification_contexts_are_accepted(ingest: Ingest) -> None:
    gateway = ingest.start()
    ae = PromptAE(ae_title="MODALITY")
    for abstract_syntax in (
        CT_IMAGE_STORAGE,
        VERIFICATION_SOP_CLASS,
        MODALITY_WORKLIST_FIND,
        PATIENT_ROOT_FIND,
        COLOR_PALETTE_FIND,
        STORAGE_COMMITMENT,
    ):
        ae.add_requested_context(abstract_syntax, ExplicitVRLittleEndian)
    assoc = ae.associate(gateway.host, gateway.port, ae_title="GATEWAY")
    try:
        assert assoc.is_established
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        refused = {str(cx.abstract_syntax): cx.result for cx in assoc.rejected_contexts}
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert accepted == {CT_IMAGE_STORAGE, VERIFICATION_SOP_CLASS}
    # 3: abstract syntax not supported (provider rejection), PS3.8 9.3.3.2
    assert refused == {
        MODALITY_WORKLIST_FIND: 3,
        PATIENT_ROOT_FIND: 3,
        COLOR_PALETTE_FIND: 3,
        STORAGE_COMMITMENT: 3,
    }


def test_full_disk_refuses_the_instance_and_keeps_serving(
    ingest: Ingest, inbox: Path, small_spool: Path
) -> None:
    gateway = ingest.start(storage_watermark_percent=100, reserved_storage_gb=0)
    (big,) = ct_series(inbox, 1, rows=2048, cols=1024, seed=3)  # 4 MiB of pixels: cannot fit
    small = ct_series(inbox, 2, seed=4)
    with ingest.events() as events:
        refused = dcmtk.storescu(
            gateway.host, gateway.port, [big.path], "GATEWAY", extra_args=["-v"]
        )
        assert "Refused: OutOfResources" in refused.stdout + refused.stderr
        dcmtk.storescu(gateway.host, gateway.port, [s.path for s in small], "GATEWAY").check()
        (message,) = events.wait_for(1)
    assert released(message).instance_count == 2
    assert "C-STORE refused with 0xA700" in gateway.log_text()
    assert "No space left on device" in gateway.log_text()
    assert list((small_spool / "incoming").iterdir()) == []


def test_port_in_use_stops_start_up_with_a_clear_error(ingest: Ingest) -> None:
    gateway = ingest.start()
    # The harness wrote the port the first one listens on into the configuration file.
    second = subprocess.run(
        [sys.executable, "-m", "dicom_gateway", "ingest", "--config", str(gateway.config_path)],
        cwd=gateway.directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=gateway_environment(),
    )
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{gateway.port}" in second.stderr
    assert "Traceback" not in second.stderr
