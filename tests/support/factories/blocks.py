"""The building blocks of the factories' data sets: patient, study and series, the SOP
common module, an image's pixel description, native pixel data, a private block with a VR UN
element, and fake codestreams for encapsulated transfer syntaxes."""

from __future__ import annotations

import random

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    UID,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from tests.support.factories.part10 import PIXEL_DATA, PRIVATE_CREATOR


def patient_study_series(study: str, series: str, seed: int, *, modality: str) -> Dataset:
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


def sop_common(ds: Dataset, sop_class: UID, sop_instance: UID, *, instance_number: int) -> None:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.InstanceNumber = str(instance_number)


def private_block(ds: Dataset, rng: random.Random) -> None:
    ds.add_new(Tag(0x0009, 0x0010), "LO", PRIVATE_CREATOR)
    ds.add(DataElement(Tag(0x0009, 0x1001), "UN", rng.randbytes(10)))


def monochrome_image(ds: Dataset, rows: int, cols: int, *, bits_stored: int) -> None:
    bits_allocated = 8 if bits_stored <= 8 else 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0


def native_pixel_data(rng: random.Random, count: int, *, bits_stored: int) -> DataElement:
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


def fake_codestream(transfer_syntax: str, rng: random.Random) -> bytes:
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
