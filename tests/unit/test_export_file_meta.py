"""Export's file meta reader gives what pydicom reads, or leaves the file to pydicom."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom.errors import InvalidDicomError

from export.file_meta import FileMeta, _by_pydicom, read_file_meta
from tests.support.factories import ct_series
from tests.support.factories.images import compressed_instance, private_sop_instance

PREAMBLE = b"\0" * 128 + b"DICM"


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"UN"):
        return struct.pack("<HH2s2xI", 2, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def _file(
    tmp_path: Path, *elements: bytes, group_length: int | None = None, rest: bytes = b""
) -> Path:
    body = b"".join(elements)
    length = len(body) if group_length is None else group_length
    path = tmp_path / "object.dcm"
    path.write_bytes(PREAMBLE + _element(0, b"UL", struct.pack("<I", length)) + body + rest)
    return path


CLASS = _element(2, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0")
INSTANCE = _element(3, b"UI", b"1.2.3.4\0")
SYNTAX = _element(0x10, b"UI", b"1.2.840.10008.1.2.1\0")
VERSION = _element(1, b"OB", b"\0\1")
DATA_SET = struct.pack("<HH2sH", 8, 0x16, b"UI", 4) + b"1.2\0"


def test_the_factories_files_read_as_pydicom_reads_them(tmp_path: Path) -> None:
    paths = [i.path for i in ct_series(tmp_path / "ct", 2)]
    paths.append(private_sop_instance(tmp_path / "private").path)
    paths.append(compressed_instance(tmp_path / "jpeg", "1.2.840.10008.1.2.4.50").path)
    for path in paths:
        assert read_file_meta(path) == _by_pydicom(path)


@pytest.mark.parametrize(
    ("elements", "extra"),
    [
        ((VERSION, CLASS, INSTANCE, SYNTAX), {}),
        ((CLASS, SYNTAX), {}),  # no SOP instance: '' as from pydicom
        ((VERSION, _element(2, b"UI", b"1.2.3 "), INSTANCE, SYNTAX), {}),  # space padded
        ((VERSION, CLASS, INSTANCE, SYNTAX, _element(0x100, b"UN", b"x" * 10)), {}),
        ((VERSION, _element(2, b"UI", b"1.2.3\\1.2.4"), INSTANCE, SYNTAX), {}),  # to pydicom
        ((VERSION, _element(2, b"LO", b"1.2.3\0"), INSTANCE, SYNTAX), {}),  # to pydicom
        ((VERSION, CLASS, INSTANCE, SYNTAX), {"group_length": 10}),  # lies: to pydicom
        ((VERSION, CLASS, INSTANCE), {"group_length": 200, "rest": DATA_SET}),  # lies
        # Stops before the transfer syntax: pydicom reads on to the end of group 0002.
        ((VERSION, CLASS, INSTANCE, SYNTAX), {"group_length": len(VERSION + CLASS + INSTANCE)}),
        # A VR that is not one of the file meta's (pydicom reads 0x0c00 as implicit VR).
        (
            (
                VERSION,
                CLASS,
                INSTANCE,
                SYNTAX,
                struct.pack("<HH2sH", 2, 0x100, b"\x0c\x00", 0) + _element(0x10, b"UI", b"1.2\0"),
            ),
            {},
        ),
    ],
)
def test_crafted_file_metas_read_as_pydicom_reads_them(
    tmp_path: Path, elements: tuple[bytes, ...], extra: dict[str, object]
) -> None:
    path = _file(tmp_path, *elements, **extra)  # type: ignore[arg-type]
    assert read_file_meta(path) == _by_pydicom(path)


def test_our_own_objects_are_read_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, VERSION, CLASS, INSTANCE, SYNTAX, rest=DATA_SET)
    monkeypatch.setattr("export.file_meta.read_dataset", None)  # never called
    assert read_file_meta(path) == FileMeta(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="1.2.3.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        data_set_offset=len(PREAMBLE) + 12 + len(VERSION + CLASS + INSTANCE + SYNTAX),
    )


@pytest.mark.parametrize("content", [b"", b"not dicom at all", b"\0" * 200])
def test_what_is_no_part10_file_raises_as_pydicom(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "object.dcm"
    path.write_bytes(content)
    with pytest.raises(InvalidDicomError):
        read_file_meta(path)


@pytest.mark.parametrize("lie", [-10, 4])
def test_a_lying_group_length_gives_where_the_data_set_really_starts(
    tmp_path: Path, lie: int
) -> None:
    """Where pynetdicom's send_c_store would start sending: after group 0002's last element."""
    body = VERSION + CLASS + INSTANCE + SYNTAX
    path = _file(tmp_path, VERSION, CLASS, INSTANCE, SYNTAX, group_length=len(body) + lie)
    with path.open("ab") as file:
        file.write(DATA_SET)
    meta = read_file_meta(path)
    assert meta.data_set_offset == len(PREAMBLE) + 12 + len(body)
    assert meta.transfer_syntax_uid == "1.2.840.10008.1.2.1"
