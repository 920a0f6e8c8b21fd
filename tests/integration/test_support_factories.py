"""The factories write valid, deterministic Part 10 files in every encoding the tests need."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from tests.support import dcmtk
from tests.support.factories import (
    PRIVATE_TRANSFER_SYNTAX,
    Instance,
    awkward_instance,
    compressed_instance,
    ct_series,
    data_set_bytes,
    instance_uids,
    private_sop_instance,
)

COMPRESSED_SYNTAXES = [
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    PRIVATE_TRANSFER_SYNTAX,
]
NATIVE_SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
]

Factory = Callable[[Path], list[Instance]]


def _series(transfer_syntax: str) -> Factory:
    return lambda directory: ct_series(directory, 2, transfer_syntax=transfer_syntax)


def _compressed(transfer_syntax: str) -> Factory:
    return lambda directory: [compressed_instance(directory, transfer_syntax, frames=2)]


def _awkward(transfer_syntax: str) -> Factory:
    return lambda directory: [awkward_instance(directory, transfer_syntax)]


FACTORIES: dict[str, Factory] = {
    **{f"ct_series-{ts.name}": _series(ts) for ts in NATIVE_SYNTAXES},
    **{f"compressed-{ts}": _compressed(ts) for ts in COMPRESSED_SYNTAXES},
    **{f"awkward-{ts.name}": _awkward(ts) for ts in NATIVE_SYNTAXES},
    "private_sop": lambda directory: [private_sop_instance(directory)],
}


@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
def test_dcmdump_accepts_the_files(factory: Factory, tmp_path: Path) -> None:
    for instance in factory(tmp_path):
        result = dcmtk.run_tool("dcmdump", ["+L", str(instance.path)], timeout=30).check()
        assert "E: " not in result.stderr
        assert instance.uids.sop_instance in result.stdout
        assert instance_uids(instance.path) == instance.uids


@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
def test_files_are_deterministic(factory: Factory, tmp_path: Path) -> None:
    first = factory(tmp_path / "first")
    second = factory(tmp_path / "second")
    assert [i.path.read_bytes() for i in first] == [i.path.read_bytes() for i in second]
    assert [i.uids for i in first] == [i.uids for i in second]


def test_deflated_data_set_is_really_deflated(tmp_path: Path) -> None:
    instance = compressed_instance(tmp_path, DeflatedExplicitVRLittleEndian)
    deflated = data_set_bytes(instance.path)
    inflated = zlib.decompress(deflated, wbits=-zlib.MAX_WBITS)
    assert len(inflated) > len(deflated)
    assert instance.uids.sop_instance.encode() in inflated
    assert instance.uids.sop_instance.encode() not in deflated


def test_awkward_instance_has_group_lengths_and_un(tmp_path: Path) -> None:
    instance = awkward_instance(tmp_path, ExplicitVRLittleEndian)
    dump = dcmtk.run_tool("dcmdump", [str(instance.path)], timeout=30).check().stdout
    assert "(0008,0000) UL" in dump
    assert "(0028,0000) UL" in dump
    assert "(0018,0050) UN" in dump
    assert "(0009,1001) UN" in dump


def test_series_shares_study_and_series(tmp_path: Path) -> None:
    series = ct_series(tmp_path, 3, study_uid="1.2.3.4", series_uid="1.2.3.4.5")
    assert {i.uids.study for i in series} == {"1.2.3.4"}
    assert {i.uids.series for i in series} == {"1.2.3.4.5"}
    assert len({i.uids.sop_instance for i in series}) == 3
    assert len({i.path for i in series}) == 3


def test_seeds_give_different_instances(tmp_path: Path) -> None:
    (first,) = ct_series(tmp_path, 1, seed=1)
    (second,) = ct_series(tmp_path, 1, seed=2)
    assert first.uids.sop_instance != second.uids.sop_instance
    assert first.path != second.path
