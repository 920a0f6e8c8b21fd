"""Part 10 files in export tests: what a destination wrote (:func:`read_received`), and copies
of a file with a hand-written, possibly invalid, file meta (:func:`with_file_meta`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.filereader import read_file_meta_info

from tests.support.factories import file_meta_length


@dataclass(frozen=True)
class ReceivedFile:
    """A Part 10 file a destination wrote, split into what identifies it and its data set."""

    sop_instance_uid: str
    transfer_syntax_uid: str
    data_set: bytes


def read_received(path: Path) -> ReceivedFile:
    meta = read_file_meta_info(path)
    raw = path.read_bytes()
    return ReceivedFile(
        sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
        data_set=raw[file_meta_length(raw) :],
    )


def with_file_meta(
    source: Path,
    target: Path,
    *,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
    transfer_syntax_uid: str | None = None,
) -> Path:
    """Copy a Part 10 file with its file meta rewritten by hand (so that it may be invalid).

    The data set bytes are kept; the meta is encoded here, not by pydicom, which would refuse
    or warn about the values a test wants to see an object carry.
    """
    meta = read_file_meta_info(source)
    raw = source.read_bytes()
    values = {
        0x0002: str(sop_class_uid or meta.MediaStorageSOPClassUID),
        0x0003: str(sop_instance_uid or meta.MediaStorageSOPInstanceUID),
        0x0010: str(transfer_syntax_uid or meta.TransferSyntaxUID),
        0x0012: str(meta.ImplementationClassUID),
    }
    group = b"\x02\x00\x01\x00OB\x00\x00" + (2).to_bytes(4, "little") + b"\x00\x01"
    for element, uid in values.items():
        value = uid.encode("ascii")
        value += b"\x00" * (len(value) % 2)
        group += b"\x02\x00" + element.to_bytes(2, "little") + b"UI"
        group += len(value).to_bytes(2, "little") + value
    group_length = b"\x02\x00\x00\x00UL" + (4).to_bytes(2, "little")
    group_length += len(group).to_bytes(4, "little")
    target.write_bytes(raw[:132] + group_length + group + raw[file_meta_length(raw) :])
    return target
