"""Part 10 framing: identity read without decoding everything, meta put in front of raw bytes."""

from __future__ import annotations

import io
import tracemalloc
import warnings
import zlib

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
)

from gateway.dicom_status import Status
from gateway.errors import InstanceRejected
from ingest.part10 import (
    InstanceIdentity,
    data_set_offset,
    file_meta_bytes,
    invalid_uid,
    read_identity,
)
from ingest.well_formed import check_well_formed

STUDY = "1.2.3.4"
SERIES = "1.2.3.4.5"
SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
SOP_INSTANCE = "1.2.3.4.5.6"
PRIVATE_SYNTAX = "1.3.6.1.4.1.99999.1"


def received_file(transfer_syntax: str, **overrides: object) -> bytes:
    """What pynetdicom writes: preamble, a file meta group, then the data set as sent."""
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASS
    ds.SOPInstanceUID = SOP_INSTANCE
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.PatientName = "Test^Patient"
    ds.BitsAllocated = 16
    encoded = pydicom.uid.UID(transfer_syntax)
    if encoded.is_transfer_syntax and encoded.is_compressed:
        fragments = encapsulate([bytes(range(256)) * 8])
        ds.add(DataElement(0x7FE00010, "OB", fragments, is_undefined_length=True))
    else:
        ds.PixelData = bytes(range(256)) * 64
    for keyword, value in overrides.items():
        if value is None:
            delattr(ds, keyword)
        else:
            # Invalid values on purpose: they are what the tests are about.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                setattr(ds, keyword, value)
    write_as = encoded if encoded.is_transfer_syntax else ExplicitVRLittleEndian
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = write_as
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.UID(SOP_CLASS)
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(SOP_INSTANCE)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


#: Every encoding a data set can arrive in, a private transfer syntax included.
ENCODINGS = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    PRIVATE_SYNTAX,
]


@pytest.mark.parametrize("transfer_syntax", ENCODINGS)
def test_identity_is_read_in_every_encoding(transfer_syntax: str) -> None:
    stream = io.BytesIO(received_file(transfer_syntax))
    offset = data_set_offset(stream)
    identity = read_identity(stream, offset, transfer_syntax, "", "")
    assert identity == InstanceIdentity(SOP_CLASS, SOP_INSTANCE, STUDY, SERIES)


def test_deflated_data_set_is_really_deflated() -> None:
    raw = received_file(DeflatedExplicitVRLittleEndian)
    offset = data_set_offset(io.BytesIO(raw))
    inflated = zlib.decompress(raw[offset:], -zlib.MAX_WBITS)
    assert len(inflated) > len(raw) - offset  # the test data compresses, so it was deflated


def test_command_uids_are_the_fallback() -> None:
    raw = received_file(ExplicitVRLittleEndian, SOPClassUID=None, SOPInstanceUID=None)
    stream = io.BytesIO(raw)
    identity = read_identity(
        stream, data_set_offset(stream), ExplicitVRLittleEndian, "1.2.9", "1.2.9.1"
    )
    assert (identity.sop_class_uid, identity.sop_instance_uid) == ("1.2.9", "1.2.9.1")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SOPInstanceUID": "../../x"}, "SOP Instance UID"),
        ({"StudyInstanceUID": "1.2.03"}, "Study Instance UID"),
        ({"SeriesInstanceUID": "1." + "2" * 70}, "Series Instance UID"),
        ({"StudyInstanceUID": None}, "Study Instance UID"),
    ],
)
def test_invalid_uids_are_refused_as_cannot_understand(
    overrides: dict[str, object], message: str
) -> None:
    stream = io.BytesIO(received_file(ExplicitVRLittleEndian, **overrides))
    with pytest.raises(InstanceRejected, match=message) as caught:
        read_identity(stream, data_set_offset(stream), ExplicitVRLittleEndian, "", "")
    assert caught.value.status == Status.CANNOT_UNDERSTAND


def test_garbage_data_set_is_refused() -> None:
    raw = received_file(ExplicitVRLittleEndian)
    offset = data_set_offset(io.BytesIO(raw))
    garbage = raw[:offset] + b"\xff" * 7
    with pytest.raises(InstanceRejected) as caught:
        read_identity(io.BytesIO(garbage), offset, DeflatedExplicitVRLittleEndian, "", "")
    assert caught.value.status == Status.CANNOT_UNDERSTAND


def test_file_without_part10_header_is_refused() -> None:
    with pytest.raises(InstanceRejected):
        data_set_offset(io.BytesIO(b"\x00" * 200))


def test_object_is_meta_plus_the_untouched_data_set() -> None:
    raw = received_file(JPEG2000Lossless)
    offset = data_set_offset(io.BytesIO(raw))
    meta = file_meta_bytes(
        SOP_CLASS,
        SOP_INSTANCE,
        JPEG2000Lossless,
        source_ae_title="CT01",
        implementation_class_uid="2.25.1",
        implementation_version_name="TESTGW",
    )
    stored = pydicom.dcmread(io.BytesIO(meta + raw[offset:]), defer_size=64)
    assert stored.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert stored.file_meta.SourceApplicationEntityTitle == "CT01"
    assert stored.file_meta.ImplementationClassUID == "2.25.1"
    assert stored.file_meta.ImplementationVersionName == "TESTGW"
    assert stored.file_meta.MediaStorageSOPInstanceUID == SOP_INSTANCE
    assert data_set_offset(io.BytesIO(meta)) == len(meta)


@pytest.mark.parametrize(
    "case",
    [
        (SOP_CLASS, SOP_INSTANCE, JPEG2000Lossless, "CT01", "2.25.1", "TESTGW"),
        # odd lengths everywhere: UIDs padded with NUL, SH and AE with a space
        ("1.2.3", "1.2.3.45", "1.2.840.10008.1.2", "ODD", "2.25.123", "V1"),
        ("1.2", "1.2.34", "1.2.840.10008.1.2.1", "A" * 16, "2.25.9", "VERSION-NAME-16C"),
        (SOP_CLASS, SOP_INSTANCE, "1.2.840.10008.1.2.4.201", "MR", "2.25.12", ""),
    ],
)
def test_file_meta_is_what_pydicom_writes(case: tuple[str, str, str, str, str, str]) -> None:
    sop_class, sop_instance, transfer_syntax, source, implementation, version = case
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(implementation)
    meta.ImplementationVersionName = version
    meta.SourceApplicationEntityTitle = source
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    expected = b"\x00" * 128 + b"DICM" + buffer.getvalue()
    assert expected == file_meta_bytes(
        sop_class,
        sop_instance,
        transfer_syntax,
        source_ae_title=source,
        implementation_class_uid=implementation,
        implementation_version_name=version,
    )


def test_a_large_element_in_a_deflated_data_set_is_skipped_in_bounded_memory() -> None:
    """64 MiB of zeros deflate to 64 KiB; skipping them must not inflate them all at once."""
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASS
    ds.SOPInstanceUID = SOP_INSTANCE
    ds.add_new(0x00191010, "OB", bytes(64 * 1024 * 1024))  # private, before the study UID
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    assert len(raw) < 1024 * 1024
    del ds, buffer
    stream = io.BytesIO(raw)
    offset = data_set_offset(stream)
    tracemalloc.start()
    try:
        identity = read_identity(stream, offset, DeflatedExplicitVRLittleEndian, "", "")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert identity.series_instance_uid == SERIES
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while skipping 64 MiB"


@pytest.mark.parametrize(
    ("in_command", "message"),
    [
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.7"}, "SOP Class UID"),
        ({"sop_instance": "1.2.3.4.5.7"}, "SOP Instance UID"),
    ],
)
def test_uids_that_are_not_the_commands_are_refused(
    in_command: dict[str, str], message: str
) -> None:
    stream = io.BytesIO(received_file(ExplicitVRLittleEndian))
    with pytest.raises(InstanceRejected, match=message) as caught:
        read_identity(
            stream,
            data_set_offset(stream),
            ExplicitVRLittleEndian,
            in_command.get("sop_class", SOP_CLASS),
            in_command.get("sop_instance", SOP_INSTANCE),
        )
    assert caught.value.status == Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS


def test_a_commands_uid_that_is_not_valid_is_not_quoted_whole() -> None:
    stream = io.BytesIO(received_file(ExplicitVRLittleEndian))
    with pytest.raises(InstanceRejected) as caught:
        read_identity(
            stream, data_set_offset(stream), ExplicitVRLittleEndian, SOP_CLASS, "1.2.3.DOE^JOHN"
        )
    assert caught.value.status == Status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert caught.value.reason.endswith("is not the command's '1.2.3.' and 8 other characters")
    assert SOP_INSTANCE in caught.value.reason  # the data set's, valid, is quoted whole


@pytest.mark.parametrize("transfer_syntax", [*ENCODINGS, JPEG2000Lossless])
def test_what_pydicom_writes_is_well_formed(transfer_syntax: str) -> None:
    raw = received_file(transfer_syntax)
    check_well_formed(io.BytesIO(raw), data_set_offset(io.BytesIO(raw)), transfer_syntax)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("1.2.3.DOE^JOHN", "SOP instance '1.2.3.' and 8 other characters is not a valid UID"),
        ("DOE^JOHN", "SOP instance '' and 8 other characters is not a valid UID"),
        ("1.2..3", "SOP instance '1.2..3' is not a valid UID"),
        (
            "1." + "2" * 80,
            "SOP instance '1." + "2" * 62 + "' and 18 other characters is not a valid UID",
        ),
        ("1.2\n3", "SOP instance '1.2' and 2 other characters is not a valid UID"),
    ],
)
def test_an_invalid_uid_is_described_without_its_letters(text: str, said: str) -> None:
    assert invalid_uid("SOP instance", text) == said
