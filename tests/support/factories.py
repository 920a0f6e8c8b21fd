"""Deterministic DICOM Part 10 files, made in code so that no binary test data is checked in.

Every factory writes its files into a directory the test owns (created if missing), named after
their SOP Instance UIDs, and returns :class:`Instance` records. The same arguments (including
``seed``) always give the same bytes and UIDs, so a failure can be reproduced and a file can be
regenerated instead of stored; different arguments give different SOP instances. Instances made
with the same ``seed`` belong to the same patient and study.

The files are encoded here rather than with ``Dataset.save_as`` because some of them are what
pydicom would refuse or normalise: a private transfer syntax, group length elements, standard
attributes sent with VR UN, fake codestreams in encapsulated pixel data. Those are the encodings a
gateway that decodes and re-encodes would lose, which is what the byte-exactness tests look for.
"""

from __future__ import annotations

import io
import random
import uuid
import zlib
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Literal, NamedTuple

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
SECONDARY_CAPTURE_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")
#: A SOP class no standard lists (under the pydicom-documented test root 1.2.826.0.1.3680043.9999).
PRIVATE_SOP_CLASS = UID("1.2.826.0.1.3680043.9999.1.1")
#: A transfer syntax no toolkit knows; encoded as explicit VR little endian, pixels encapsulated.
PRIVATE_TRANSFER_SYNTAX = UID("1.2.826.0.1.3680043.9999.2.1")

#: Transfer syntaxes whose pixel data is encapsulated (fragments, not native pixels).
ENCAPSULATED_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        JPEGBaseline8Bit,
        JPEGLSLossless,
        JPEG2000Lossless,
        JPEG2000,
        RLELossless,
        HTJ2KLossless,
        PRIVATE_TRANSFER_SYNTAX,
    }
)
#: Transfer syntaxes with native (uncompressed) pixel data that the factories can write.
NATIVE_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)

IMPLEMENTATION_CLASS_UID = UID("2.25.302311380923488519418453536208212371209")
IMPLEMENTATION_VERSION_NAME = "GWTEST_FACTORY"

_PRIVATE_CREATOR = "DICOMGW TEST"
_UID_NAMESPACE = uuid.UUID("0e6b5f7c-5d1a-4f0e-9a57-6c1f3d0b2a11")
PIXEL_DATA = Tag(0x7FE0, 0x0010)


class InstanceUIDs(NamedTuple):
    """The identifying UIDs of one stored instance."""

    study: str
    series: str
    sop_class: str
    sop_instance: str
    transfer_syntax: str


@dataclass(frozen=True)
class Instance:
    """A Part 10 file written by a factory, and what it contains."""

    path: Path
    uids: InstanceUIDs


def derived_uid(*parts: object) -> UID:
    """A UUID-derived UID (2.25, PS3.5 B.2) that depends only on ``parts``.

    pydicom's ``generate_uid(prefix=None, ...)`` ignores its entropy sources and is random,
    so the name-based UUID is made here.
    """
    name = "\x1f".join(repr(part) for part in parts)
    return UID(f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}")


def ct_series(
    directory: Path,
    count: int,
    *,
    rows: int = 64,
    cols: int = 64,
    transfer_syntax: str = ExplicitVRLittleEndian,
    study_uid: str | None = None,
    series_uid: str | None = None,
    seed: int = 0,
) -> list[Instance]:
    """Write ``count`` CT slices of one series with native 12-bit pixels.

    ``transfer_syntax`` is one of :data:`NATIVE_TRANSFER_SYNTAXES`. Each slice carries a private
    block with a VR UN element, as many modalities send.
    """
    if transfer_syntax not in NATIVE_TRANSFER_SYNTAXES:
        raise ValueError(f"ct_series writes native pixel data; {transfer_syntax} is not native")
    study = study_uid or derived_uid("study", seed)
    series = series_uid or derived_uid("series", study, seed)
    instances = []
    for index in range(count):
        rng = random.Random(f"ct-{seed}-{index}")
        sop_instance = derived_uid("ct", series, transfer_syntax, seed, index)
        ds = _patient_study_series(study, series, seed, modality="CT")
        _sop_common(ds, CT_IMAGE_STORAGE, sop_instance, instance_number=index + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = "1.25"
        ds.KVP = "120"
        ds.ImagePositionPatient = ["-160.0", "-160.0", f"{-1.25 * index:.2f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{-1.25 * index:.2f}"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        _private_block(ds, rng)
        _monochrome_image(ds, rows, cols, bits_stored=12)
        ds.add(_native_pixel_data(rng, rows * cols, bits_stored=12))
        path = directory / f"ct-{index:04d}-{sop_instance}.dcm"
        _write_part10(path, ds, transfer_syntax)
        instances.append(
            Instance(
                path, InstanceUIDs(study, series, CT_IMAGE_STORAGE, sop_instance, transfer_syntax)
            )
        )
    return instances


def private_sop_instance(
    directory: Path,
    sop_class_uid: str = PRIVATE_SOP_CLASS,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    payload_size: int = 4096,
    seed: int = 0,
) -> Instance:
    """Write an instance of a SOP class that no standard lists, carrying an opaque payload."""
    rng = random.Random(f"private-{seed}")
    study = derived_uid("study", seed)
    series = derived_uid("private-series", study, seed)
    sop_instance = derived_uid("private", series, sop_class_uid, transfer_syntax, seed)
    ds = _patient_study_series(study, series, seed, modality="OT")
    _sop_common(ds, UID(sop_class_uid), sop_instance, instance_number=1)
    ds.add_new(Tag(0x0009, 0x0010), "LO", _PRIVATE_CREATOR)
    ds.add_new(Tag(0x0009, 0x1002), "OB", rng.randbytes(payload_size + payload_size % 2))
    path = directory / f"private-{sop_instance}.dcm"
    _write_part10(path, ds, transfer_syntax)
    return Instance(path, InstanceUIDs(study, series, sop_class_uid, sop_instance, transfer_syntax))


def compressed_instance(
    directory: Path,
    transfer_syntax_uid: str,
    *,
    rows: int = 32,
    cols: int = 32,
    frames: int = 1,
    seed: int = 0,
) -> Instance:
    """Write a secondary-capture instance in ``transfer_syntax_uid``.

    For the encapsulated syntaxes (:data:`ENCAPSULATED_TRANSFER_SYNTAXES`) the pixel data is a
    Basic Offset Table and one fragment per frame holding a fake codestream that starts and ends
    with the codec's markers: nobody decodes it, but a gateway must carry it untouched. For
    Deflated Explicit VR Little Endian the native pixels are written and the whole data set is
    really deflated.
    """
    rng = random.Random(f"compressed-{transfer_syntax_uid}-{seed}")
    study = derived_uid("study", seed)
    series = derived_uid("compressed-series", study, seed)
    sop_instance = derived_uid("compressed", series, transfer_syntax_uid, seed)
    ds = _patient_study_series(study, series, seed, modality="OT")
    _sop_common(ds, SECONDARY_CAPTURE_IMAGE_STORAGE, sop_instance, instance_number=1)
    ds.ConversionType = "WSD"
    bits_stored = 8 if transfer_syntax_uid == JPEGBaseline8Bit else 12
    _monochrome_image(ds, rows, cols, bits_stored=bits_stored)
    if frames > 1:
        ds.NumberOfFrames = str(frames)
    if transfer_syntax_uid in ENCAPSULATED_TRANSFER_SYNTAXES:
        fragments = [_fake_codestream(transfer_syntax_uid, rng) for _ in range(frames)]
        ds.add(DataElement(PIXEL_DATA, "OB", encapsulate(fragments), is_undefined_length=True))
    elif transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES:
        ds.add(_native_pixel_data(rng, rows * cols * frames, bits_stored=bits_stored))
    else:
        raise ValueError(f"no encoding known for transfer syntax {transfer_syntax_uid}")
    path = directory / f"compressed-{sop_instance}.dcm"
    _write_part10(path, ds, transfer_syntax_uid)
    return Instance(
        path,
        InstanceUIDs(
            study, series, SECONDARY_CAPTURE_IMAGE_STORAGE, sop_instance, transfer_syntax_uid
        ),
    )


def awkward_instance(
    directory: Path, transfer_syntax: str = ExplicitVRLittleEndian, *, seed: int = 0
) -> Instance:
    """Write a CT image with the encodings that decoding and re-encoding loses.

    It has a group length element in every group (retired, but still sent by old modalities and
    dropped by pydicom on re-encoding), a standard attribute (Slice Thickness) with VR UN instead
    of DS (rewritten to DS by a toolkit that knows the tag), and a private element with VR UN.
    """
    rng = random.Random(f"awkward-{seed}")
    study = derived_uid("study", seed)
    series = derived_uid("awkward-series", study, seed)
    sop_instance = derived_uid("awkward", series, transfer_syntax, seed)
    ds = _patient_study_series(study, series, seed, modality="CT")
    _sop_common(ds, CT_IMAGE_STORAGE, sop_instance, instance_number=1)
    slice_thickness = DataElement(Tag(0x0018, 0x0050), "OB", b"2.5 ")
    # Set after construction: pydicom's constructor turns UN into the dictionary VR (DS) at once.
    slice_thickness.VR = "UN"
    ds.add(slice_thickness)
    _private_block(ds, rng)
    _monochrome_image(ds, 16, 16, bits_stored=12)
    ds.add(_native_pixel_data(rng, 16 * 16, bits_stored=12))
    path = directory / f"awkward-{sop_instance}.dcm"
    _write_part10(path, ds, transfer_syntax, group_lengths=True)
    return Instance(
        path, InstanceUIDs(study, series, CT_IMAGE_STORAGE, sop_instance, transfer_syntax)
    )


def instance_uids(path: Path) -> InstanceUIDs:
    """Read the identifying UIDs of a Part 10 file, whatever its transfer syntax.

    The data set is parsed with the encoding the file meta names; a private transfer syntax is
    taken to be explicit VR little endian, as this module writes it.
    """
    meta = read_file_meta_info(path)
    transfer_syntax = UID(meta.TransferSyntaxUID)
    data_set = data_set_bytes(path)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        data_set = zlib.decompress(data_set, wbits=-zlib.MAX_WBITS)
    implicit_vr, little_endian = _encoding(transfer_syntax)
    ds = read_dataset(
        io.BytesIO(data_set),
        is_implicit_VR=implicit_vr,
        is_little_endian=little_endian,
        stop_when=lambda tag, _vr, _length: tag > 0x0020000E,
    )
    return InstanceUIDs(
        study=str(ds.StudyInstanceUID),
        series=str(ds.SeriesInstanceUID),
        sop_class=str(meta.MediaStorageSOPClassUID),
        sop_instance=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax=str(transfer_syntax),
    )


def data_set_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file: everything after the file meta information.

    For a deflated file this is the deflated stream, as it travels on the wire.
    """
    raw = path.read_bytes()
    offset = file_meta_length(raw)
    return raw[offset:]


def file_meta_length(part10: bytes) -> int:
    """Length of preamble, ``DICM`` and the file meta group, from its group length element."""
    if part10[128:132] != b"DICM":
        raise ValueError("not a DICOM Part 10 file: no DICM prefix at offset 128")
    # (0002,0000) UL, explicit VR little endian: tag (4) + VR (2) + length (2) + value (4).
    if part10[132:138] != b"\x02\x00\x00\x00UL":
        raise ValueError("file meta information does not start with its group length")
    group_length = int.from_bytes(part10[140:144], "little")
    return 144 + group_length


def large_instance(directory: Path, pixel_bytes: int, seed: int = 0) -> Instance:
    """Write a multi-frame CT instance whose pixel data is ``pixel_bytes`` long, streamed to
    disk so that the test process never holds it (for memory tests of the receiver)."""
    if pixel_bytes % 2 or pixel_bytes >= 0xFFFFFFFF:
        raise ValueError("pixel data must have an even length below 4 GiB")
    study = derived_uid("study", seed)
    series = derived_uid("large-series", study, seed)
    sop_instance = derived_uid("large", series, seed)
    ds = _patient_study_series(study, series, seed, modality="CT")
    _sop_common(ds, CT_IMAGE_STORAGE, sop_instance, instance_number=1)
    frame = 512 * 512 * 2
    _monochrome_image(ds, 512, 512, bits_stored=12)
    ds.NumberOfFrames = str(max(1, pixel_bytes // frame))
    path = directory / f"large-{seed}.dcm"
    _write_part10(path, ds, ExplicitVRLittleEndian)
    pattern = bytes(range(256)) * 4096  # 1 MiB, not all zeros so nothing can cheat on it
    with path.open("ab") as out:
        out.write(PIXEL_DATA.group.to_bytes(2, "little") + PIXEL_DATA.element.to_bytes(2, "little"))
        out.write(b"OW\x00\x00" + pixel_bytes.to_bytes(4, "little"))
        remaining = pixel_bytes
        while remaining:
            chunk = pattern[: min(remaining, len(pattern))]
            out.write(chunk)
            remaining -= len(chunk)
    return Instance(
        path, InstanceUIDs(study, series, CT_IMAGE_STORAGE, sop_instance, ExplicitVRLittleEndian)
    )


# --- building blocks -------------------------------------------------------------------------


def _patient_study_series(study: str, series: str, seed: int, *, modality: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = f"ACC{seed:05d}"
    ds.Modality = modality
    ds.Manufacturer = "dicom-gateway tests"
    ds.ReferringPhysicianName = ""
    ds.PatientName = f"Test^Patient{seed}"
    ds.PatientID = f"PID{seed:05d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = f"S{seed}"
    ds.SeriesNumber = "1"
    return ds


def _sop_common(ds: Dataset, sop_class: UID, sop_instance: UID, *, instance_number: int) -> None:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.InstanceNumber = str(instance_number)


def _private_block(ds: Dataset, rng: random.Random) -> None:
    ds.add_new(Tag(0x0009, 0x0010), "LO", _PRIVATE_CREATOR)
    ds.add(DataElement(Tag(0x0009, 0x1001), "UN", rng.randbytes(10)))


def _monochrome_image(ds: Dataset, rows: int, cols: int, *, bits_stored: int) -> None:
    bits_allocated = 8 if bits_stored <= 8 else 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0


def _native_pixel_data(rng: random.Random, count: int, *, bits_stored: int) -> DataElement:
    """Pixel Data of ``count`` native values below ``2**bits_stored`` (16-bit words as LE).

    The VR is given explicitly (OB or OW) so that a group can be encoded on its own, without the
    Bits Allocated that pydicom would otherwise need to resolve "OB or OW".
    """
    if bits_stored <= 8:
        return DataElement(PIXEL_DATA, "OB", rng.randbytes(count + count % 2))
    data = bytearray(rng.randbytes(count * 2))
    high_mask = bytes(b & ((1 << (bits_stored - 8)) - 1) for b in range(256))
    data[1::2] = data[1::2].translate(high_mask)
    return DataElement(PIXEL_DATA, "OW", bytes(data))


def _fake_codestream(transfer_syntax: str, rng: random.Random) -> bytes:
    """Bytes shaped like one frame of the codec (markers only), of even length."""
    body = rng.randbytes(200)
    if transfer_syntax in (JPEGBaseline8Bit, JPEGLSLossless):
        stream = b"\xff\xd8" + body + b"\xff\xd9"  # SOI ... EOI
    elif transfer_syntax in (JPEG2000Lossless, JPEG2000, HTJ2KLossless):
        stream = b"\xff\x4f\xff\x51" + body + b"\xff\xd9"  # SOC, SIZ ... EOC
    elif transfer_syntax == RLELossless:
        # RLE header: one segment starting right after the 64-byte header (PS3.5 G.3.1).
        header = (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + bytes(56)
        stream = header + body
    else:
        stream = body
    return stream + b"\x00" * (len(stream) % 2)


def _encoding(transfer_syntax: str) -> tuple[bool, bool]:
    """(implicit VR, little endian) of a transfer syntax; unknown ones are explicit VR LE."""
    if transfer_syntax == ImplicitVRLittleEndian:
        return True, True
    if transfer_syntax == ExplicitVRBigEndian:
        return False, False
    return False, True


def _encode(ds: Dataset, transfer_syntax: str, *, group_lengths: bool = False) -> bytes:
    implicit_vr, little_endian = _encoding(transfer_syntax)
    if not group_lengths:
        return _write(ds, implicit_vr=implicit_vr, little_endian=little_endian)
    # pydicom never writes group length elements (PS3.5 7.2 retired them), so each group is
    # encoded on its own and preceded by a (gggg,0000) UL holding the group's encoded length.
    byteorder: Literal["little", "big"] = "little" if little_endian else "big"
    length_header = (
        (4).to_bytes(4, byteorder) if implicit_vr else b"UL" + (4).to_bytes(2, byteorder)
    )
    encoded = bytearray()
    for group, tags in groupby(sorted(ds.keys()), key=lambda tag: tag.group):
        members = Dataset()
        for tag in tags:
            members.add(ds[tag])
        body = _write(members, implicit_vr=implicit_vr, little_endian=little_endian)
        encoded += group.to_bytes(2, byteorder) + bytes(2) + length_header
        encoded += len(body).to_bytes(4, byteorder) + body
    return bytes(encoded)


def _write(ds: Dataset, *, implicit_vr: bool, little_endian: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = implicit_vr
    buffer.is_little_endian = little_endian
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _write_part10(
    path: Path, ds: Dataset, transfer_syntax: str, *, group_lengths: bool = False
) -> None:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    body = _encode(ds, transfer_syntax, group_lengths=group_lengths)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        # Raw deflate (no zlib header), as PS3.5 A.5 requires.
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush()
        body += b"\x00" * (len(body) % 2)
    header = DicomBytesIO()
    header.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(header, meta, enforce_standard=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.getvalue() + body)


@dataclass(frozen=True)
class EncodedDataSet:
    """A data set in implicit VR little endian, in memory, kept element by element so that a
    test can cut, drop or rewrite single elements (and their length fields) of it."""

    uids: InstanceUIDs
    #: (tag, the element's encoding: tag, 4-byte length, value), in tag order.
    elements: tuple[tuple[int, bytes], ...]

    @property
    def encoded(self) -> bytes:
        return b"".join(encoded for _, encoded in self.elements)

    def offset(self, tag: int) -> int:
        """Where the element ``tag`` starts in :attr:`encoded`."""
        position = 0
        for element_tag, encoded in self.elements:
            if element_tag == tag:
                return position
            position += len(encoded)
        raise KeyError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is not in the data set")


def small_data_set(index: int, *, seed: int = 0) -> EncodedDataSet:
    """A small CT image (8 by 8 pixels) of the ``seed`` study, in implicit VR little endian.

    ``index`` (below 9,000,000) makes its SOP Instance UID, which has the same length for every
    index: the data sets of one ``seed`` differ in their UIDs' digits and pixels, never in their
    layout. Besides the usual attributes it has a private block with a VR UN element and a
    Referenced Image Sequence of undefined length holding one item of undefined length, so that
    both kinds of delimiter are there to be broken.
    """
    if not 0 <= index < 9_000_000:
        raise ValueError("index must be below 9,000,000, so that every UID has one length")
    study = derived_uid("study", seed)
    series = derived_uid("small-series", study, seed)
    number = 1_000_000 + index  # seven digits, whatever the index
    sop_instance = UID(f"{series}.{number}")
    rng = random.Random(f"small-{seed}-{index}")
    ds = _patient_study_series(study, series, seed, modality="CT")
    _sop_common(ds, CT_IMAGE_STORAGE, sop_instance, instance_number=number)
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = CT_IMAGE_STORAGE
    referenced.ReferencedSOPInstanceUID = UID(f"{sop_instance}.1")
    referenced.is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = [referenced]
    ds["ReferencedImageSequence"].is_undefined_length = True
    _private_block(ds, rng)
    _monochrome_image(ds, 8, 8, bits_stored=12)
    ds.add(_native_pixel_data(rng, 8 * 8, bits_stored=12))
    elements = []
    for tag in sorted(ds.keys()):
        single = Dataset()
        single.add(ds[tag])
        elements.append((int(tag), _write(single, implicit_vr=True, little_endian=True)))
    return EncodedDataSet(
        InstanceUIDs(study, series, CT_IMAGE_STORAGE, sop_instance, ImplicitVRLittleEndian),
        tuple(elements),
    )
