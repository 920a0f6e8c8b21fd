"""Data sets in memory, element by element, for tests that cut, drop or rewrite single
elements of what a sender sends (raw C-STOREs)."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID, ImplicitVRLittleEndian

from tests.support.factories.blocks import (
    monochrome_image,
    native_pixel_data,
    patient_study_series,
    private_block,
    sop_common,
)
from tests.support.factories.part10 import (
    CT_IMAGE_STORAGE,
    InstanceUIDs,
    derived_uid,
    write_elements,
)

UNDEFINED_LENGTH = 0xFFFFFFFF
#: An item of undefined length, and the delimiters (implicit VR little endian).
ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED_LENGTH)
ITEM_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQUENCE_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


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
    ds = patient_study_series(study, series, seed, modality="CT")
    sop_common(ds, CT_IMAGE_STORAGE, sop_instance, instance_number=number)
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = CT_IMAGE_STORAGE
    referenced.ReferencedSOPInstanceUID = UID(f"{sop_instance}.1")
    referenced.is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = [referenced]
    ds["ReferencedImageSequence"].is_undefined_length = True
    private_block(ds, rng)
    monochrome_image(ds, 8, 8, bits_stored=12)
    ds.add(native_pixel_data(rng, 8 * 8, bits_stored=12))
    elements = []
    for tag in sorted(ds.keys()):
        single = Dataset()
        single.add(ds[tag])
        elements.append((int(tag), write_elements(single, implicit_vr=True, little_endian=True)))
    return EncodedDataSet(
        InstanceUIDs(study, series, CT_IMAGE_STORAGE, sop_instance, ImplicitVRLittleEndian),
        tuple(elements),
    )


def replaced(base: EncodedDataSet, replacements: dict[int, bytes | None]) -> bytes:
    """The data set with each element of ``replacements`` replaced (dropped, for None)."""
    return b"".join(
        (replacements[tag] or b"") if tag in replacements else encoded
        for tag, encoded in base.elements
    )


def uid_element(tag: int, text: str) -> bytes:
    """A UI element with ``text``, valid or not, in implicit VR little endian."""
    value = text.encode("ascii")
    value += b"\x00" * (len(value) % 2)
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def nested_sequences(depth: int) -> bytes:
    """A private sequence holding a sequence holding ... ``depth`` levels, all delimited."""
    opening = struct.pack("<HHI", 0x0009, 0x1002, UNDEFINED_LENGTH) + ITEM
    innermost = struct.pack("<HHI", 0x0009, 0x1003, 2) + b"ab"
    return opening * depth + innermost + (ITEM_DELIMITER + SEQUENCE_DELIMITER) * depth
