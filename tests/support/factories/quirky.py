"""Data sets as devices in the field send them now and then: without a Study or Series Instance
UID, with invalid ones, with sequences nested deeper than the gateway follows, cut short, with
lengths that lie. Each is what ``ingest.malformed_instances`` decides about: stored as received
and flagged (``"store"``) or refused with 0xC000 (``"refuse"``).

Every quirk is made from :func:`~tests.support.factories.raw.small_data_set` (implicit VR little
endian), with the answer a gateway that stores it must give in its event: which study and series
UID it finds (None: the key has ``unknown`` there) and words its reason must contain. Those that
dcmtk's ``storescu`` can read and send (:attr:`Quirk.dcmtk_sends`) are also written as Part 10
files (:func:`write_quirk`); the rest only a raw sender can put on the wire.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from tests.support.factories.part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    InstanceUIDs,
)
from tests.support.factories.raw import (
    SEQUENCE_DELIMITER,
    nested_sequences,
    replaced,
    small_data_set,
    uid_element,
)

SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
REFERENCED_IMAGE_SEQUENCE = 0x00081140
PRIVATE_UN = 0x00091001
PIXEL_DATA = 0x7FE00010
#: Deeper than the gateway follows (ingest.well_formed.MAX_SEQUENCE_DEPTH is 64).
TOO_DEEP = 70
#: A Series Instance UID as a careless device may fill it: a patient's name. Neither the log
#: nor the event's reason may quote more of it than its leading digits and dots.
NAME_IN_A_UID = "1.2.3.DOE^JOHN"


@dataclass(frozen=True)
class Quirk:
    """One quirky data set and what a gateway that stores it must say of it."""

    name: str
    #: The data set's own UIDs before it was made quirky; the command names its SOP instance.
    uids: InstanceUIDs
    encoded: bytes
    #: The study and series UIDs the event names (None: none valid in the data set).
    study: str | None
    series: str | None
    #: Words the event's reason contains.
    reason: str
    #: Whether dcmtk's storescu can read the file and send it (re-encoded: compare with the
    #: wire, not with the file).
    dcmtk_sends: bool


def quirks(first_index: int) -> list[Quirk]:
    """One of each quirk, made from ``small_data_set(first_index)``, ``(first_index + 1)``, ...
    (so each has a SOP Instance UID of its own)."""
    bases = [small_data_set(first_index + n) for n in range(8)]
    made: list[Quirk] = []

    def add(
        name: str,
        encoded: bytes,
        *,
        study: str | None,
        series: str | None,
        reason: str,
        dcmtk_sends: bool,
    ) -> None:
        base = bases[len(made)]
        made.append(Quirk(name, base.uids, encoded, study, series, reason, dcmtk_sends))

    base = bases[0]
    add(
        "no study UID",
        replaced(base, {STUDY_INSTANCE_UID: None}),
        study=None,
        series=base.uids.series,
        reason="no Study Instance UID",
        dcmtk_sends=True,
    )
    base = bases[1]
    add(
        "no series UID",
        replaced(base, {SERIES_INSTANCE_UID: None}),
        study=base.uids.study,
        series=None,
        reason="no Series Instance UID",
        dcmtk_sends=True,
    )
    base = bases[2]
    add(
        "invalid study and series UIDs",
        replaced(
            base,
            {
                STUDY_INSTANCE_UID: uid_element(STUDY_INSTANCE_UID, "1..2"),
                SERIES_INSTANCE_UID: uid_element(SERIES_INSTANCE_UID, NAME_IN_A_UID),
            },
        ),
        study=None,
        series=None,
        reason="is not a valid UID",
        dcmtk_sends=True,
    )
    base = bases[3]
    add(
        # In the private group before the study: the UIDs after it are not read.
        "sequences nested too deep",
        replaced(base, {PRIVATE_UN: dict(base.elements)[PRIVATE_UN] + nested_sequences(TOO_DEEP)}),
        study=None,
        series=None,
        reason="sequences nested deeper than",
        dcmtk_sends=True,
    )
    base = bases[4]
    pixel_data = base.offset(PIXEL_DATA)
    add(
        "cut short in its pixel data",
        base.encoded[: pixel_data + 20],
        study=base.uids.study,
        series=base.uids.series,
        reason="longer than the data",
        dcmtk_sends=False,
    )
    base = bases[5]
    (length,) = struct.unpack_from("<I", base.encoded, pixel_data + 4)
    add(
        "pixel data length past the end",
        base.encoded[: pixel_data + 4]
        + struct.pack("<I", length + 100)
        + base.encoded[pixel_data + 8 :],
        study=base.uids.study,
        series=base.uids.series,
        reason="longer than the data",
        dcmtk_sends=False,
    )
    base = bases[6]
    sequence = dict(base.elements)[REFERENCED_IMAGE_SEQUENCE]
    add(
        # The rest of the data set is read as the sequence's: its UIDs are not found.
        "sequence never closed",
        replaced(base, {REFERENCED_IMAGE_SEQUENCE: sequence[: -len(SEQUENCE_DELIMITER)]}),
        study=None,
        series=None,
        reason="not an item, in a sequence",
        dcmtk_sends=False,
    )
    add(
        "garbage",
        b"\x08\x00\x16\x00\xff\xff\xff\x7f" + bytes(range(200)),
        study=None,
        series=None,
        reason="not well-formed",
        dcmtk_sends=False,
    )
    return made


def write_quirk(directory: Path, quirk: Quirk) -> Path:
    """``quirk`` as a Part 10 file (implicit VR little endian) named after its SOP instance."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(quirk.uids.sop_class)
    meta.MediaStorageSOPInstanceUID = UID(quirk.uids.sop_instance)
    meta.TransferSyntaxUID = UID(quirk.uids.transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    header = DicomBytesIO()
    header.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(header, meta, enforce_standard=True)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{quirk.uids.sop_instance}.dcm"
    path.write_bytes(header.getvalue() + quirk.encoded)
    return path
