"""Part 10 framing without re-encoding: our file meta in front of the sender's data set bytes.

pynetdicom's chunked receive writes ``preamble + its own file meta + data set`` to a temporary
file. We keep that file untouched in the spool and, when the object is written to storage, put
*our* file meta (negotiated transfer syntax, the sender's AE title, our implementation UID) in
front of the data set bytes. The data set is never decoded and re-encoded, so it stays byte for
byte what arrived on the wire.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from io import RawIOBase
from typing import BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from contracts.keys import is_valid_uid
from gateway.dicom_codes import Status
from gateway.errors import InstanceRejected

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"

_PREAMBLE = b"\x00" * 128 + b"DICM"
# (0002,0000) UL, explicit VR little endian: tag, VR, 2-byte length, 4-byte value.
_GROUP_LENGTH_HEADER = struct.pack("<HH2sH", 0x0002, 0x0000, b"UL", 4)
_LAST_IDENTITY_TAG = Tag(0x0020, 0x000E)  # Series Instance UID: nothing after it is needed
_IDENTITY_TAGS = [
    Tag(0x0008, 0x0016),  # SOP Class UID
    Tag(0x0008, 0x0018),  # SOP Instance UID
    Tag(0x0020, 0x000D),  # Study Instance UID
    Tag(0x0020, 0x000E),  # Series Instance UID
]


@dataclass(frozen=True)
class InstanceIdentity:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


def data_set_offset(received: BinaryIO) -> int:
    """Offset of the data set in a file that starts with a preamble and a file meta group.

    pynetdicom always writes the group length element first, so the offset is read from it
    instead of parsing the meta group.
    """
    head = received.read(len(_PREAMBLE) + 12)
    if len(head) < len(_PREAMBLE) + 12 or head[128:132] != b"DICM":
        raise InstanceRejected(Status.OUT_OF_RESOURCES, "received file has no Part 10 header")
    if head[132:140] != _GROUP_LENGTH_HEADER:
        raise InstanceRejected(Status.OUT_OF_RESOURCES, "received file meta has no group length")
    (group_length,) = struct.unpack("<I", head[140:144])
    return len(_PREAMBLE) + 12 + int(group_length)


def file_meta_bytes(
    identity: InstanceIdentity,
    transfer_syntax_uid: str,
    source_ae_title: str,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """Preamble, ``DICM`` and the file meta group that precede the data set in the object."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(identity.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(identity.sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = UID(implementation_class_uid)
    meta.ImplementationVersionName = implementation_version_name
    meta.SourceApplicationEntityTitle = source_ae_title
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return _PREAMBLE + buffer.getvalue()


class _Inflating(RawIOBase):
    """A reader that inflates a deflated data set as it is read.

    Only as much as the identifying attributes need is ever inflated, and at most about two
    ``_WINDOW`` of it is held: skipping a large element inflates and drops it piece by piece.
    pydicom peeks a few bytes ahead and seeks back, so the last ``_WINDOW`` inflated bytes
    before the current position are kept for short backward seeks.
    """

    _WINDOW = 1024 * 1024
    _STEP = 256 * 1024

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._unconsumed = b""
        self._window = b""  # inflated bytes from offset ``_window_start``
        self._window_start = 0
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def _inflate_to(self, end: int, keep_from: int) -> None:
        """Inflate up to offset ``end``, keeping nothing before ``keep_from``."""
        while self._window_start + len(self._window) < end and not self._inflater.eof:
            if not self._unconsumed:
                self._unconsumed = self._source.read(65536)
                if not self._unconsumed:
                    break
            self._window += self._inflater.decompress(self._unconsumed, self._STEP)
            self._unconsumed = self._inflater.unconsumed_tail
            self._trim(keep_from)
        self._trim(keep_from)

    def _trim(self, keep_from: int) -> None:
        excess = min(keep_from - self._window_start, len(self._window))
        if excess > 0:
            self._window = self._window[excess:]
            self._window_start += excess

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise OSError("unbounded reads of a deflated stream are not supported")
        self._inflate_to(self._position + size, keep_from=self._position - self._WINDOW)
        start = self._position - self._window_start
        data = self._window[start : start + size]
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self._position + offset
        if target < self._window_start:
            raise OSError("cannot seek that far back in a deflated stream")
        self._inflate_to(target, keep_from=target - self._WINDOW)
        self._position = min(target, self._window_start + len(self._window))
        return self._position


def _uid(data_set: Dataset, tag: BaseTag, fallback: str, name: str) -> str:
    """The UID's text as sent, without pydicom's value conversion (which warns on bad UIDs)."""
    text = fallback
    if tag in data_set:
        value = data_set.get_item(tag).value
        raw = value if isinstance(value, bytes) else str(value).encode("ascii", "replace")
        text = raw.decode("ascii", "replace").rstrip("\x00 ")
    if not is_valid_uid(text):
        raise InstanceRejected(Status.CANNOT_UNDERSTAND, f"{name} {text[:80]!r} is not a valid UID")
    return text


def read_identity(
    received: BinaryIO,
    offset: int,
    transfer_syntax_uid: str,
    command_sop_class_uid: str,
    command_sop_instance_uid: str,
) -> InstanceIdentity:
    """Read the four UIDs that place an instance, stopping before anything large.

    The SOP class and instance come from the data set and fall back to the C-STORE command's
    Affected SOP Class/Instance UID when the data set lacks them. An unknown transfer syntax is
    read as explicit VR little endian, which is what private syntaxes use in practice.
    """
    received.seek(offset)
    stream: BinaryIO = received
    if transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        stream = _Inflating(received)  # type: ignore[assignment]

    def past_identity(tag: BaseTag, _vr: str | None, _length: int) -> bool:
        return bool(tag > _LAST_IDENTITY_TAG)

    try:
        data_set = read_dataset(
            stream,
            is_implicit_VR=transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN,
            is_little_endian=transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN,
            stop_when=past_identity,
            defer_size=1024,
            specific_tags=list(_IDENTITY_TAGS),
        )
    except (InvalidDicomError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise InstanceRejected(
            Status.CANNOT_UNDERSTAND, f"data set cannot be parsed: {exc}"
        ) from exc
    sop_class, sop_instance, study, series = _IDENTITY_TAGS
    return InstanceIdentity(
        sop_class_uid=_uid(data_set, sop_class, command_sop_class_uid, "SOP Class UID"),
        sop_instance_uid=_uid(data_set, sop_instance, command_sop_instance_uid, "SOP Instance UID"),
        study_instance_uid=_uid(data_set, study, "", "Study Instance UID"),
        series_instance_uid=_uid(data_set, series, "", "Series Instance UID"),
    )
