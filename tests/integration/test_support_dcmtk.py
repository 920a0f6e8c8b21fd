"""The dcmtk runners send what they are given and report rejections as numbers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from tests.support import dcmtk
from tests.support.factories import compressed_instance, ct_series, instance_uids
from tests.support.net import free_port
from tests.support.storescp import Storescp

VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def picky_scp() -> Iterator[int]:
    """A pynetdicom SCP that accepts calling AE title KNOWN only (others: 1/1/3)."""
    ae = AE(ae_title="PICKY")
    ae.require_calling_aet = ["KNOWN"]
    ae.add_supported_context(VERIFICATION)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    assert server is not None
    try:
        yield port
    finally:
        server.shutdown()


def test_echoscu_succeeds_against_storescp(tmp_path: Path) -> None:
    with Storescp(tmp_path, ae_title="REFERENCE") as storescp:
        result = dcmtk.echoscu("127.0.0.1", storescp.port, called_ae="REFERENCE")
    assert result.ok, result
    assert result.rejection is None


@pytest.mark.parametrize("tool", ["echoscu", "storescu", "dcmsend"])
def test_rejection_is_parsed(tool: str, picky_scp: int, tmp_path: Path) -> None:
    files = [i.path for i in ct_series(tmp_path, 1)]
    if tool == "echoscu":
        result = dcmtk.echoscu("127.0.0.1", picky_scp, "PICKY", "STRANGER")
    elif tool == "storescu":
        result = dcmtk.storescu("127.0.0.1", picky_scp, files, "PICKY", "STRANGER")
    else:
        result = dcmtk.dcmsend("127.0.0.1", picky_scp, files, "PICKY", "STRANGER")
    assert not result.ok
    assert result.rejection == (1, 1, 3), result


def test_storescp_refusal_is_parsed(tmp_path: Path) -> None:
    files = [i.path for i in ct_series(tmp_path / "in", 1)]
    with Storescp(tmp_path / "scp", extra_args=["--refuse"]) as storescp:
        result = dcmtk.dcmsend("127.0.0.1", storescp.port, files, "STORESCP")
    assert result.returncode == 61  # dcmsend: cannot negotiate an association
    assert result.rejection == (1, 1, 1), result


def test_connection_refused_is_not_a_rejection(refusing_port: int) -> None:
    result = dcmtk.echoscu("127.0.0.1", refusing_port)
    assert not result.ok
    assert result.rejection is None
    assert "Connection refused" in result.stderr


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "F: Association Rejected:\n"
            "F: Result: Rejected Permanent, Source: Service User\n"
            "F: Reason: Called AE Title Not Recognized\n",
            (1, 1, 7),
        ),
        (
            "D: Association Rejected:\n"
            "D: Result: Rejected Transient, Source: Service Provider (Presentation Related)\n"
            "D: Reason: Local Limit Exceeded\n",
            (2, 3, 2),
        ),
        (
            "F: Result: Rejected Transient, Source: Service Provider (Presentation Related)\n"
            "F: Reason: Temporary Congestion\n",
            (2, 3, 1),
        ),
        ("I: Association Accepted (Max Send PDV: 16370)\n", None),
    ],
)
def test_parse_rejection(output: str, expected: tuple[int, int, int] | None) -> None:
    assert dcmtk.parse_rejection(output) == expected


def test_storescu_picks_the_proposal_option(tmp_path: Path) -> None:
    jpeg = compressed_instance(tmp_path, "1.2.840.10008.1.2.4.50").path
    rle = compressed_instance(tmp_path, "1.2.840.10008.1.2.5").path
    plain = ct_series(tmp_path, 1)[0].path
    assert dcmtk.storescu_proposal([plain]) == ()
    assert dcmtk.storescu_proposal([jpeg, plain]) == ("-xy",)
    with pytest.raises(ValueError, match="use dcmsend"):
        dcmtk.storescu_proposal([jpeg, rle])
    with pytest.raises(ValueError, match="cannot send"):
        dcmtk.storescu_proposal([compressed_instance(tmp_path, "1.2.840.10008.1.2.4.201").path])


def test_storescu_sends_a_compressed_file_as_is(tmp_path: Path) -> None:
    instance = compressed_instance(tmp_path / "in", "1.2.840.10008.1.2.4.91")
    with Storescp(tmp_path / "scp") as storescp:
        dcmtk.storescu("127.0.0.1", storescp.port, [instance.path], "STORESCP").check()
        (received,) = storescp.received_files()
    assert instance_uids(received) == instance.uids


def test_dcmsend_sending_nothing_is_not_ok(tmp_path: Path) -> None:
    htj2k = compressed_instance(tmp_path / "in", "1.2.840.10008.1.2.4.201")
    with Storescp(tmp_path / "scp") as storescp:
        result = dcmtk.dcmsend("127.0.0.1", storescp.port, [htj2k.path], "STORESCP")
        assert storescp.received_files() == []
    assert result.returncode == 0  # the quirk: dcmsend calls this a success
    assert not result.ok
    assert any("No Acceptable Presentation Contexts" in line for line in result.errors)
