"""Part 10 files of several kinds, written into a directory the test owns (see the package
docstring): CT series, private SOP classes, compressed and deflated instances, the encodings
that decoding loses, and large multi-frame instances streamed to disk."""

from __future__ import annotations

import random
from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGBaseline8Bit

from tests.support.factories.blocks import (
    fake_codestream,
    monochrome_image,
    native_pixel_data,
    patient_study_series,
    private_block,
    sop_common,
)
from tests.support.factories.part10 import (
    CT_IMAGE_STORAGE,
    ENCAPSULATED_TRANSFER_SYNTAXES,
    JPIP_REFERENCED_DEFLATE,
    NATIVE_TRANSFER_SYNTAXES,
    PIXEL_DATA,
    PRIVATE_CREATOR,
    PRIVATE_SOP_CLASS,
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    Instance,
    InstanceUIDs,
    derived_uid,
    write_part10,
)


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
        ds = patient_study_series(study, series, seed, modality="CT")
        sop_common(ds, CT_IMAGE_STORAGE, sop_instance, instance_number=index + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = "1.25"
        ds.KVP = "120"
        ds.ImagePositionPatient = ["-160.0", "-160.0", f"{-1.25 * index:.2f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{-1.25 * index:.2f}"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        private_block(ds, rng)
        monochrome_image(ds, rows, cols, bits_stored=12)
        ds.add(native_pixel_data(rng, rows * cols, bits_stored=12))
        path = directory / f"ct-{index:04d}-{sop_instance}.dcm"
        write_part10(path, ds, transfer_syntax)
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
    ds = patient_study_series(study, series, seed, modality="OT")
    sop_common(ds, UID(sop_class_uid), sop_instance, instance_number=1)
    ds.add_new(Tag(0x0009, 0x0010), "LO", PRIVATE_CREATOR)
    ds.add_new(Tag(0x0009, 0x1002), "OB", rng.randbytes(payload_size + payload_size % 2))
    path = directory / f"private-{sop_instance}.dcm"
    write_part10(path, ds, transfer_syntax)
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
    ds = patient_study_series(study, series, seed, modality="OT")
    sop_common(ds, SECONDARY_CAPTURE_IMAGE_STORAGE, sop_instance, instance_number=1)
    ds.ConversionType = "WSD"
    bits_stored = 8 if transfer_syntax_uid == JPEGBaseline8Bit else 12
    monochrome_image(ds, rows, cols, bits_stored=bits_stored)
    if frames > 1:
        ds.NumberOfFrames = str(frames)
    if transfer_syntax_uid in ENCAPSULATED_TRANSFER_SYNTAXES:
        fragments = [fake_codestream(transfer_syntax_uid, rng) for _ in range(frames)]
        ds.add(DataElement(PIXEL_DATA, "OB", encapsulate(fragments), is_undefined_length=True))
    elif transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES:
        ds.add(native_pixel_data(rng, rows * cols * frames, bits_stored=bits_stored))
    else:
        raise ValueError(f"no encoding known for transfer syntax {transfer_syntax_uid}")
    path = directory / f"compressed-{sop_instance}.dcm"
    write_part10(path, ds, transfer_syntax_uid)
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
    ds = patient_study_series(study, series, seed, modality="CT")
    sop_common(ds, CT_IMAGE_STORAGE, sop_instance, instance_number=1)
    slice_thickness = DataElement(Tag(0x0018, 0x0050), "OB", b"2.5 ")
    # Set after construction: pydicom's constructor turns UN into the dictionary VR (DS) at once.
    slice_thickness.VR = "UN"
    ds.add(slice_thickness)
    private_block(ds, rng)
    monochrome_image(ds, 16, 16, bits_stored=12)
    ds.add(native_pixel_data(rng, 16 * 16, bits_stored=12))
    path = directory / f"awkward-{sop_instance}.dcm"
    write_part10(path, ds, transfer_syntax, group_lengths=True)
    return Instance(
        path, InstanceUIDs(study, series, CT_IMAGE_STORAGE, sop_instance, transfer_syntax)
    )


def jpip_referenced_instance(directory: Path, *, seed: int = 0) -> Instance:
    """Write a secondary-capture instance in JPIP Referenced Deflate: no pixel data but its
    URL (Pixel Data Provider URL), and the whole data set deflated."""
    study = derived_uid("study", seed)
    series = derived_uid("jpip-series", study, seed)
    sop_instance = derived_uid("jpip", series, seed)
    ds = patient_study_series(study, series, seed, modality="OT")
    sop_common(ds, SECONDARY_CAPTURE_IMAGE_STORAGE, sop_instance, instance_number=1)
    ds.ConversionType = "WSD"
    monochrome_image(ds, 32, 32, bits_stored=8)
    ds.add(DataElement(Tag(0x0028, 0x7FE0), "UR", f"http://pacs.invalid/jpip/{sop_instance}"))
    path = directory / f"jpip-{sop_instance}.dcm"
    write_part10(path, ds, JPIP_REFERENCED_DEFLATE)
    return Instance(
        path,
        InstanceUIDs(
            study, series, SECONDARY_CAPTURE_IMAGE_STORAGE, sop_instance, JPIP_REFERENCED_DEFLATE
        ),
    )


def odd_length_instance(directory: Path, *, seed: int = 0) -> Instance:
    """Write a CT slice whose data set has an odd length, as some modalities send: it ends with
    a private element of 3 bytes (PS3.5 7.1.1 requires even value lengths; ingest stores it
    as received all the same)."""
    (instance,) = ct_series(directory, 1, seed=seed + 7_000)
    # (7FE1,0010) LO, explicit VR little endian: after the pixel data, so the order holds.
    odd_element = b"\xe1\x7f\x10\x00LO\x03\x00ODD"
    with instance.path.open("ab") as part10:
        part10.write(odd_element)
    return instance


def large_instance(directory: Path, pixel_bytes: int, seed: int = 0) -> Instance:
    """Write a multi-frame CT instance whose pixel data is ``pixel_bytes`` long, streamed to
    disk so that the test process never holds it (for memory tests of the receiver)."""
    if pixel_bytes % 2 or pixel_bytes >= 0xFFFFFFFF:
        raise ValueError("pixel data must have an even length below 4 GiB")
    study = derived_uid("study", seed)
    series = derived_uid("large-series", study, seed)
    sop_instance = derived_uid("large", series, seed)
    ds = patient_study_series(study, series, seed, modality="CT")
    sop_common(ds, CT_IMAGE_STORAGE, sop_instance, instance_number=1)
    frame = 512 * 512 * 2
    monochrome_image(ds, 512, 512, bits_stored=12)
    ds.NumberOfFrames = str(max(1, pixel_bytes // frame))
    path = directory / f"large-{seed}.dcm"
    write_part10(path, ds, ExplicitVRLittleEndian)
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
