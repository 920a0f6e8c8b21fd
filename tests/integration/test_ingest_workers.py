"""Ingest with worker processes (``ingest.workers = 2``): the same guarantees on two cores."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from gateway.dicom_status import VERIFICATION_SOP_CLASS, Status
from gateway.netdicom.ae import PromptAE
from gateway_client.testing import GatewayProcess, http_get
from tests.support import dcmtk
from tests.support.factories import Instance, ct_series, data_set_bytes, file_meta_length
from tests.support.ingest import Ingest, released
from tests.support.net import wait_until
from tests.support.proc import child_pids
from tests.support.settled import wait_until_handed_on

WORKERS = 2


@pytest.fixture
def scu() -> Iterator[PromptAE]:
    ae = PromptAE(ae_title="HOLDER")
    ae.add_requested_context(VERIFICATION_SOP_CLASS)
    ae.add_requested_context(CTImageStorage)
    yield ae
    ae.shutdown()


def worker_pids(gateway: GatewayProcess) -> set[int]:
    assert gateway.pid is not None
    return child_pids(gateway.pid)


def open_owners(ingest: Ingest) -> list[int]:
    """The process holding each open association, from the journal (white-box)."""
    journal = ingest.workdir / "spool" / "journal.sqlite3"
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5) as db:
        return [row[0] for row in db.execute("SELECT owner FROM associations WHERE state='open'")]


def counter(port: int, sample: str) -> float:
    _, body = http_get("127.0.0.1", port, "/metrics")
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_concurrent_associations_are_spread_over_the_workers_and_all_stored(
    ingest: Ingest, inbox: Path, scu: PromptAE
) -> None:
    gateway = ingest.start(workers=WORKERS)
    http_port = gateway.http_port
    workers = worker_pids(gateway)
    assert len(workers) == WORKERS

    held = [scu.associate(gateway.host, gateway.port, ae_title="GATEWAY") for _ in range(2)]
    assert all(assoc.is_established for assoc in held)
    wait_until(lambda: len(open_owners(ingest)) == 2, 10, "both associations recorded")
    assert set(open_owners(ingest)) == workers, "two associations went to one worker"
    for assoc in held:
        assoc.release()

    senders = {f"CT0{i}": ct_series(inbox / str(i), 3) for i in range(4)}
    with ingest.events() as events:
        threads = [
            threading.Thread(
                target=lambda title=title, series=series: dcmtk.storescu(
                    gateway.host, gateway.port, [s.path for s in series], "GATEWAY", title
                ).check()
            )
            for title, series in senders.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        messages = events.wait_for(4)
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()

    objects = ingest.objects()
    for data in (released(m) for m in messages):
        sent: dict[str, Instance] = {s.uids.sop_instance: s for s in senders[data.calling_ae_title]}
        assert {i.sop_instance_uid for i in data.instances} == set(sent)
        for instance in data.instances:
            stored = objects[instance.object_key]
            assert stored[file_meta_length(stored) :] == data_set_bytes(
                sent[instance.sop_instance_uid].path
            )
    assert ingest.spool_files() == []
    # The workers' counts reach the parent's /metrics.
    assert counter(http_port, 'dicom_gateway_instances_received_total{called_ae="GATEWAY"}') == 12
    assert counter(http_port, 'dicom_gateway_associations_accepted_total{called_ae="GATEWAY"}') >= 6
    assert (
        counter(
            http_port,
            'dicom_gateway_associations_ended_total{called_ae="GATEWAY",outcome="released"}',
        )
        >= 6
    )
    assert counter(http_port, "dicom_gateway_associations_open") == 0


def test_a_killed_worker_aborts_its_association_and_is_replaced(
    ingest: Ingest, inbox: Path, scu: PromptAE
) -> None:
    gateway = ingest.start(workers=WORKERS)
    before = worker_pids(gateway)
    series = ct_series(inbox, 4)
    with ingest.events() as events:
        victim = scu.associate(gateway.host, gateway.port, ae_title="GATEWAY")
        assert victim.is_established
        for instance in series[:2]:
            status = victim.send_c_store(pydicom.dcmread(instance.path))
            assert status.Status == Status.SUCCESS
        (owner,) = open_owners(ingest)
        assert owner in before

        os.kill(owner, signal.SIGKILL)
        wait_until(lambda: not victim.is_alive(), 10, "the sender sees the connection end")
        assert not victim.is_released
        wait_until(
            lambda: len(worker_pids(gateway) - before) == 1, 20, "a new worker takes its place"
        )
        wait_until(lambda: ingest.spool_files() == [], 15, "the aborted files are removed")
        assert open_owners(ingest) == []

        dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series[2:]], "GATEWAY").check()
        (message,) = events.wait_for(1)
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    assert released(message).calling_ae_title == "STORESCU"
    assert released(message).instance_count == 2
    log = gateway.log_text()
    assert f"(pid {owner}) ended with status -9" in log
    assert "aborted: its ingest worker ended" in log

    assert gateway.terminate() == 0
    assert worker_pids(gateway) == set()


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


def test_workers_abort_and_stop_when_the_main_process_is_killed(
    ingest: Ingest, inbox: Path, scu: PromptAE
) -> None:
    gateway = ingest.start(workers=WORKERS)
    workers = worker_pids(gateway)
    held = scu.associate(gateway.host, gateway.port, ae_title="GATEWAY")
    assert held.is_established
    gateway.kill()
    wait_until(lambda: not any(running(p) for p in workers), 10, "the workers stop")
    wait_until(lambda: not held.is_alive(), 10, "the open association is ended")
    assert not held.is_released
    assert "the parent process is gone, aborting and stopping" in gateway.log_text()

    gateway.start()  # the same configuration and spool
    series = ct_series(inbox, 2)
    with ingest.events() as events:
        dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series], "GATEWAY").check()
        (message,) = events.wait_for(1)
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    assert released(message).instance_count == 2
    assert open_owners(ingest) == []
