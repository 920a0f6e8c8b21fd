"""Contexts known before anything is fetched: what an instance manifest lists plans the first
association, which opens at once and proposes every context; an object that is not what its
manifest says fails on its own. The objects come from a file store wrapped to hold downloads;
the destination is a scripted pynetdicom SCP in this process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config as pynetdicom_config

from contracts.events import StoredInstance
from contracts.export import ExportCompleted, ExportRequested, InstanceOutcome
from contracts.keys import is_manifest_key, manifest_key, new_association_id, object_key
from contracts.manifest import manifest_line
from export.announced import MAX_MANIFESTS, announced_instances, manifests_to_read, mismatch
from export.plan import Context, InstanceMeta
from gateway.objectstore import FileStore
from gateway.settings import StorageSettings
from gateway_client.testing import wait_until
from tests.support.exporters import exporter_to
from tests.support.factories import CT_IMAGE_STORAGE, compressed_instance, ct_series
from tests.support.instance_manifests import listed, put_with_manifest
from tests.support.scripted_scp import ScriptedScp
from tests.unit.test_export_streaming import CONTEXTS, HOLD_DEADLINE, WatchedStore

CT_EXPLICIT: Context = (CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
KEY = object_key(new_association_id(), "1.2.3", "1.2.3.4", "1.2.3.4.5")


@pytest.fixture(autouse=True)
def sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends files as stored (what export's start-up sets), put back afterwards."""
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)


def meta(context: Context) -> InstanceMeta:
    return InstanceMeta(KEY, context[0], "1.2.3.4.5", context[1])


@pytest.mark.parametrize(
    ("announced", "found", "fails"),
    [
        (None, CT_EXPLICIT, False),
        (CT_EXPLICIT, CT_EXPLICIT, False),
        (CT_EXPLICIT, (CT_IMAGE_STORAGE, ImplicitVRLittleEndian), True),
        (CT_EXPLICIT, ("1.2.840.10008.5.1.4.1.1.7", ExplicitVRLittleEndian), True),
    ],
)
def test_an_object_is_sent_only_as_what_was_announced(
    announced: Context | None, found: Context, fails: bool
) -> None:
    why = mismatch(announced, meta(found))
    assert (why is not None) is fails
    if why is not None:
        assert found[1] in why
        assert "instance manifest" in why


def test_a_manifest_announces_the_objects_asked_for(tmp_path: Path) -> None:
    association = new_association_id()
    first, second = ct_series(tmp_path, 2)
    lines = [manifest_line(listed(association, i)) for i in (first, second)]
    wanted = listed(association, second).object_key

    found = announced_instances(lines, {wanted, KEY})

    assert list(found) == [wanted]
    assert found[wanted].context == CT_EXPLICIT
    assert found[wanted].sop_instance_uid == second.uids.sop_instance


def test_a_damaged_manifest_announces_nothing(tmp_path: Path) -> None:
    association = new_association_id()
    (instance,) = ct_series(tmp_path, 1)
    entry = listed(association, instance)
    lines = [manifest_line(entry), b'{"sop_instance_uid": "1.2"}\n']

    assert announced_instances(lines, {entry.object_key}) == {}


@pytest.mark.parametrize(
    ("associations", "read"), [(1, 1), (MAX_MANIFESTS, MAX_MANIFESTS), (MAX_MANIFESTS + 1, 0)]
)
def test_manifests_are_tried_for_a_few_associations(associations: int, read: int) -> None:
    ids = [new_association_id() for _ in range(associations)]
    keys = [object_key(a, "1.2.3", "1.2.3.4", f"1.2.3.4.{n}") for a in ids for n in (1, 2)]

    manifests = manifests_to_read(keys)

    assert manifests == [manifest_key(a) for a in ids][:read]


def export_association(
    tmp_path: Path, store: WatchedStore, association_id: str, port: int
) -> ExportCompleted:
    exporter = exporter_to("scp", "SCRIPTED", port, store, tmp_path / "export")
    request = ExportRequested(
        export_id=f"announced-{association_id}",
        destinations=("scp",),
        association_id=association_id,
    )
    return asyncio.run(exporter.run(request))


def test_a_mixed_request_with_a_manifest_opens_one_association_before_any_download(
    tmp_path: Path,
) -> None:
    files = FileStore(StorageSettings(backend="file", path=tmp_path / "objects", bucket="b"))
    association = new_association_id()
    instances = [
        *ct_series(tmp_path / "in", 3),
        compressed_instance(tmp_path / "in", ExplicitVRLittleEndian),
    ]
    keys = put_with_manifest(files, association, instances)
    opened_first: list[bool] = []

    with ScriptedScp(CONTEXTS) as scp:

        def hold_the_first(key: str) -> None:
            # Contexts learnt from fetched objects would wait here for an association that
            # cannot open before this download.
            if key == keys[0]:
                try:
                    wait_until(lambda: scp.associations > 0, HOLD_DEADLINE, "association")
                    opened_first.append(True)
                except TimeoutError:
                    opened_first.append(False)

        done = export_association(
            tmp_path, WatchedStore(files, hold_the_first), association, scp.port
        )

    assert opened_first == [True]
    (result,) = done.destinations
    assert [(i.object_key, i.status) for i in result.instances] == [
        (key, InstanceOutcome.SENT) for key in sorted(keys)
    ]
    # The SC instance needs a second context: proposed up front, in the same association.
    assert scp.associations == 1
    assert len(scp.stores) == len(instances)


def test_an_object_unlike_its_manifest_line_fails_alone(tmp_path: Path) -> None:
    files = FileStore(StorageSettings(backend="file", path=tmp_path / "objects", bucket="b"))
    association = new_association_id()
    instances = ct_series(tmp_path / "in", 3)
    lines: list[StoredInstance] = [listed(association, i) for i in instances]
    lines[1] = lines[1].model_copy(update={"transfer_syntax_uid": ImplicitVRLittleEndian})
    keys = put_with_manifest(files, association, instances, lines)
    fetched: list[str] = []

    with ScriptedScp(CONTEXTS) as scp:
        done = export_association(
            tmp_path, WatchedStore(files, fetched.append), association, scp.port
        )

    (result,) = done.destinations
    outcome = {i.object_key: i for i in result.instances}
    assert [outcome[key].status for key in keys] == [
        InstanceOutcome.SENT,
        InstanceOutcome.FAILED,
        InstanceOutcome.SENT,
    ]
    error = outcome[keys[1]].error
    assert error is not None
    assert "instance manifest lists it as" in error
    assert outcome[keys[1]].sop_instance_uid == instances[1].uids.sop_instance
    assert sorted(s.sop_instance_uid for s in scp.stores) == sorted(
        i.uids.sop_instance for i in (instances[0], instances[2])
    )
    assert scp.associations == 1
    assert sum(is_manifest_key(key) for key in fetched) == 1
