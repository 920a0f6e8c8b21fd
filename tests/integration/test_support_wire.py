"""RecordingProxy records exactly the data sets a receiver gets, as dcmtk's storescp keeps them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from tests.support import dcmtk
from tests.support.factories import (
    PRIVATE_SOP_CLASS,
    awkward_instance,
    compressed_instance,
    ct_series,
    data_set_bytes,
    instance_uids,
    private_sop_instance,
)
from tests.support.net import wait_until
from tests.support.storescp import Storescp
from tests.support.wire import CStoreRequest, RecordingProxy, parse_c_store_requests


def _stored_data_sets(storescp: Storescp) -> dict[str, bytes]:
    return {instance_uids(p).sop_instance: data_set_bytes(p) for p in storescp.received_files()}


def _assert_wire_equals_stored(requests: list[CStoreRequest], stored: dict[str, bytes]) -> None:
    for request in requests:
        assert request.data_set == stored[request.affected_sop_instance_uid], (
            f"data set of {request.affected_sop_instance_uid} differs from what storescp stored"
        )


def test_storescu_data_sets_equal_what_storescp_stored(tmp_path: Path) -> None:
    instances = [*ct_series(tmp_path / "in", 4), awkward_instance(tmp_path / "in")]
    with (
        Storescp(tmp_path / "scp") as storescp,
        RecordingProxy("127.0.0.1", storescp.port) as proxy,
    ):
        dcmtk.storescu(
            "127.0.0.1", proxy.port, [i.path for i in instances], called_ae="STORESCP"
        ).check()
        (requests,) = proxy.c_store_requests()
        stored = _stored_data_sets(storescp)

    assert [r.affected_sop_instance_uid for r in requests] == [
        i.uids.sop_instance for i in instances
    ]
    assert len(stored) == len(instances)
    _assert_wire_equals_stored(requests, stored)


def test_deflated_data_set_is_recorded_deflated(tmp_path: Path) -> None:
    instance = compressed_instance(tmp_path / "in", DeflatedExplicitVRLittleEndian)
    with (
        Storescp(tmp_path / "scp") as storescp,
        RecordingProxy("127.0.0.1", storescp.port) as proxy,
    ):
        dcmtk.storescu("127.0.0.1", proxy.port, [instance.path], called_ae="STORESCP").check()
        (requests,) = proxy.c_store_requests()
        stored = _stored_data_sets(storescp)

    (request,) = requests
    assert instance.uids.sop_instance.encode() not in request.data_set  # still compressed
    _assert_wire_equals_stored(requests, stored)


def test_dcmsend_mixed_syntaxes_and_private_sop_class(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    instances = [
        compressed_instance(inputs, JPEGBaseline8Bit),
        compressed_instance(inputs, "1.2.840.10008.1.2.4.90"),
        compressed_instance(inputs, "1.2.840.10008.1.2.5"),
        private_sop_instance(inputs),
        *ct_series(inputs, 2, transfer_syntax=ImplicitVRLittleEndian),
    ]
    with (
        Storescp(tmp_path / "scp") as storescp,
        RecordingProxy("127.0.0.1", storescp.port) as proxy,
    ):
        dcmtk.dcmsend(
            "127.0.0.1", proxy.port, [i.path for i in instances], called_ae="STORESCP"
        ).check()
        (requests,) = proxy.c_store_requests()
        stored = _stored_data_sets(storescp)

    assert sorted(r.affected_sop_instance_uid for r in requests) == sorted(
        i.uids.sop_instance for i in instances
    )
    assert PRIVATE_SOP_CLASS in {r.affected_sop_class_uid for r in requests}
    _assert_wire_equals_stored(requests, stored)


def test_one_recording_per_connection(tmp_path: Path) -> None:
    first, second = ct_series(tmp_path / "in", 2)
    with (
        Storescp(tmp_path / "scp") as storescp,
        RecordingProxy("127.0.0.1", storescp.port) as proxy,
    ):
        for instance in (first, second):
            dcmtk.storescu("127.0.0.1", proxy.port, [instance.path], called_ae="STORESCP").check()
        recorded = proxy.c_store_requests()

    assert [[r.affected_sop_instance_uid for r in c] for c in recorded] == [
        [first.uids.sop_instance],
        [second.uids.sop_instance],
    ]


def test_a_cut_off_data_set_is_not_reported(tmp_path: Path) -> None:
    instances = ct_series(tmp_path / "in", 2)
    with (
        Storescp(tmp_path / "scp") as storescp,
        RecordingProxy("127.0.0.1", storescp.port) as proxy,
    ):
        dcmtk.storescu(
            "127.0.0.1", proxy.port, [i.path for i in instances], called_ae="STORESCP"
        ).check()
        (connection,) = proxy.wait_closed()
    stream = connection.client_bytes

    # Cut the stream in the middle of the second instance's data set.
    second_start = stream.rindex(instances[1].uids.sop_instance.encode())
    truncated = parse_c_store_requests(stream[: second_start + 100])
    assert [r.affected_sop_instance_uid for r in truncated] == [instances[0].uids.sop_instance]


def test_sever_resets_open_connections(tmp_path: Path) -> None:
    with (
        Storescp(tmp_path / "scp") as storescp,
        RecordingProxy("127.0.0.1", storescp.port) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client,
    ):
        client.sendall(b"\x01\x00\x00\x00\x00\x44")  # an A-ASSOCIATE-RQ header, body to come
        wait_until(
            lambda: any(c.client_bytes for c in proxy.connections), 5, "bytes through the proxy"
        )
        proxy.sever()
        with pytest.raises(ConnectionResetError):
            client.recv(1024)
        (connection,) = proxy.wait_closed(timeout=5)
    assert connection.severed
    assert connection.client_bytes == b"\x01\x00\x00\x00\x00\x44"
