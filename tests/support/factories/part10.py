"""Part 10 files as the factories write them: the UIDs they carry, reading a file's meta, UIDs
and data set, and encoding a data set byte by byte (including what pydicom would refuse or
normalise: group lengths, a private transfer syntax, a deflated data set)."""

from __future__ import annotations

import hashlib
import io
import uuid
import zlib
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

from pydicom.dataset import Dataset, FileMetaDataset
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
#: JPIP Referenced Deflate: the data set deflated, its pixels referenced by URL (PS3.5 A.7).
JPIP_REFERENCED_DEFLATE = UID("1.2.840.10008.1.2.4.95")
#: Transfer syntaxes whose whole data set is deflated.
DEFLATED_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {DeflatedExplicitVRLittleEndian, JPIP_REFERENCED_DEFLATE}
)

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

PRIVATE_CREATOR = "DICOMGW TEST"
UID_NAMESPACE = uuid.UUID("0e6b5f7c-5d1a-4f0e-9a57-6c1f3d0b2a11")
PIXEL_DATA = Tag(0x7FE0, 0x0010)
#: How much of a file :func:`dataset_digest` reads at once.
_READ_SIZE = 1024 * 1024


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
    return UID(f"2.25.{uuid.uuid5(UID_NAMESPACE, name).int}")


def instance_uids(path: Path) -> InstanceUIDs:
    """Read the identifying UIDs of a Part 10 file, whatever its transfer syntax.

    The data set is parsed with the encoding the file meta names; a private transfer syntax is
    taken to be explicit VR little endian, as this module writes it.
    """
    meta = read_file_meta_info(path)
    transfer_syntax = UID(meta.TransferSyntaxUID)
    data_set = data_set_bytes(path)
    if transfer_syntax in DEFLATED_TRANSFER_SYNTAXES:
        data_set = zlib.decompress(data_set, wbits=-zlib.MAX_WBITS)
    implicit_vr, little_endian = encoding_of(transfer_syntax)
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


def dataset_digest(stream: BinaryIO) -> tuple[str, int]:
    """SHA-256 (hex) and length of the data set of the Part 10 file read from ``stream``,
    read in pieces (for files too large to hold): what a receiver must have kept byte for
    byte, whatever file meta it wrote in front of it."""
    head = stream.read(144)
    if len(head) < 144:
        raise ValueError(f"not a DICOM Part 10 file: it ends after {len(head)} bytes")
    meta_rest = file_meta_length(head) - len(head)
    if len(stream.read(meta_rest)) != meta_rest:
        raise ValueError("not a DICOM Part 10 file: it ends inside its file meta information")
    digest = hashlib.sha256()
    length = 0
    while chunk := stream.read(_READ_SIZE):
        digest.update(chunk)
        length += len(chunk)
    return digest.hexdigest(), length


def encoding_of(transfer_syntax: str) -> tuple[bool, bool]:
    """(implicit VR, little endian) of a transfer syntax; unknown ones are explicit VR LE."""
    if transfer_syntax == ImplicitVRLittleEndian:
        return True, True
    if transfer_syntax == ExplicitVRBigEndian:
        return False, False
    return False, True


def encode_data_set(ds: Dataset, transfer_syntax: str, *, group_lengths: bool = False) -> bytes:
    implicit_vr, little_endian = encoding_of(transfer_syntax)
    if not group_lengths:
        return write_elements(ds, implicit_vr=implicit_vr, little_endian=little_endian)
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
        body = write_elements(members, implicit_vr=implicit_vr, little_endian=little_endian)
        encoded += group.to_bytes(2, byteorder) + bytes(2) + length_header
        encoded += len(body).to_bytes(4, byteorder) + body
    return bytes(encoded)


def write_elements(ds: Dataset, *, implicit_vr: bool, little_endian: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_implicit_VR = implicit_vr
    buffer.is_little_endian = little_endian
    write_dataset(buffer, ds)
    return buffer.getvalue()


def write_part10(
    path: Path, ds: Dataset, transfer_syntax: str, *, group_lengths: bool = False
) -> None:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    body = encode_data_set(ds, transfer_syntax, group_lengths=group_lengths)
    if transfer_syntax in DEFLATED_TRANSFER_SYNTAXES:
        # Raw deflate (no zlib header), as PS3.5 A.5 requires.
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush()
        body += b"\x00" * (len(body) % 2)
    header = DicomBytesIO()
    header.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(header, meta, enforce_standard=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.getvalue() + body)
