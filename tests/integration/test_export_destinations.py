"""Destinations that are down, come back, refuse us for good; where completions are routed;
and the operator commands ``echo`` and ``send``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from contracts.export import ExportRequested, ExportStatus, InstanceOutcome
from contracts.keys import new_association_id, object_key
from tests.support.export import (
    Export,
    completed,
    destination,
    export_harness,
    new_export_id,
    run_cli,
)
from tests.support.factories import CT_IMAGE_STORAGE, ct_series, derived_uid
from tests.support.ingest import RABBITMQ_S3, Ingest
from tests.support.net import free_port, wait_until
from tests.support.scripted_scp import ScriptedScp
from tests.support.settled import stop_export_with_nothing_left
from tests.support.small_fs import small_filesystem
from tests.support.storescp import Storescp


@pytest.fixture
def export(ingest: Ingest, tmp_path: Path) -> Iterator[Export]:
    with export_harness(ingest, tmp_path) as harness:
        yield harness


def test_a_destination_that_stays_down_fails_after_the_retries(
    export: Export, inbox: Path, tmp_path: Path, refusing_port: int
) -> None:
    series = ct_series(inbox, 2)
    keys = export.put_instances(series)
    request = ExportRequested(
        export_id=new_export_id(), destinations=("up", "down"), object_keys=keys
    )
    with Storescp(tmp_path / "up") as up, export.completions() as completions:
        config = export.config([destination("up", up.port), destination("down", refusing_port)])
        process = export.start(config)
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=30)
        assert len(up.received_files()) == 2

    done = completed(message)
    assert done.status is ExportStatus.PARTIALLY_FAILED
    up_result, down_result = done.destinations
    assert (up_result.name, up_result.status) == ("up", ExportStatus.SUCCEEDED)
    assert (up_result.instances_sent, up_result.instances_failed) == (2, 0)
    assert (down_result.name, down_result.status) == ("down", ExportStatus.FAILED)
    assert (down_result.instances_sent, down_result.instances_failed) == (0, 2)
    assert [i.sop_instance_uid for i in down_result.instances] == [
        s.uids.sop_instance for s in series
    ]
    for instance in down_result.instances:
        assert instance.status is InstanceOutcome.FAILED
        assert instance.dicom_status is None
        assert instance.error is not None
        assert "not reachable" in instance.error
    log = process.log_text()
    # retries = 2: the first attempt and two retries, each retry announced once.
    assert log.count("destination down: ") == 2
    assert "(retry 2 of 2)" in log
    assert "destination up: " not in log


def test_a_destination_that_comes_back_during_the_retries_succeeds(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    keys = export.put_instances(ct_series(inbox, 3))
    late_port = free_port()
    request = ExportRequested(
        export_id=new_export_id(), destinations=("up", "late"), object_keys=keys
    )
    with Storescp(tmp_path / "up") as up, export.completions() as completions:
        config = export.config(
            [destination("up", up.port), destination("late", late_port)],
            retries=4,
            retry_backoff_seconds=[1.0, 1.5],  # time enough to start storescp between tries
        )
        process = export.start(config)
        export.publish(request)
        wait_until(
            lambda: "destination late: " in process.log_text(), 15, "the first failure is logged"
        )
        with Storescp(tmp_path / "late", port=late_port) as late:
            (message,) = completions.wait_for(1, timeout=30)
            late_files = late.received_files()

    done = completed(message)
    assert done.status is ExportStatus.SUCCEEDED
    assert [(d.name, d.status, d.instances_sent) for d in done.destinations] == [
        ("up", ExportStatus.SUCCEEDED, 3),
        ("late", ExportStatus.SUCCEEDED, 3),
    ]
    assert len(late_files) == 3
    assert "(retry 1 of 4)" in process.log_text()


def test_a_permanent_rejection_is_not_retried(export: Export, inbox: Path) -> None:
    keys = export.put_instances(ct_series(inbox, 2))
    request = ExportRequested(export_id=new_export_id(), destinations=("picky",), object_keys=keys)
    with (
        ScriptedScp(
            [(CT_IMAGE_STORAGE, [ExplicitVRLittleEndian])],
            ae_title="PICKY",
            require_calling_aet=["SOMEONE-ELSE"],
        ) as picky,
        export.completions() as completions,
    ):
        # A retry would wait 3 s: the export's duration shows whether one happened.
        config = export.config(
            [destination("picky", picky.port, "PICKY")], retries=3, retry_backoff_seconds=[3.0]
        )
        process = export.start(config)
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=30)

    done = completed(message)
    assert done.status is ExportStatus.FAILED
    (result,) = done.destinations
    assert (result.status, result.instances_sent, result.instances_failed) == (
        ExportStatus.FAILED,
        0,
        2,
    )
    for instance in result.instances:
        assert instance.status is InstanceOutcome.FAILED
        assert instance.error is not None
        assert "permanent" in instance.error
    assert (done.finished_at - done.started_at).total_seconds() < 3.0
    assert (picky.connections, picky.associations, picky.stores) == (1, 0, [])
    assert "retried in" not in process.log_text()


def test_the_completion_goes_to_the_reply_routing_key_only(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    keys = export.put_instances(ct_series(inbox, 1))
    request = ExportRequested(
        export_id=new_export_id(),
        destinations=("pacs",),
        object_keys=keys,
        reply_routing_key="pipeline.lung.export-done",
    )
    with (
        Storescp(tmp_path / "pacs") as pacs,
        export.completions() as default_key,
        export.completions(("pipeline.lung.export-done",)) as reply_key,
    ):
        process = export.start(export.config([destination("pacs", pacs.port)]))
        export.publish(request)
        (message,) = reply_key.wait_for(1, timeout=30)
        stop_export_with_nothing_left(process, export.ingest, export.queue, default_key)
    assert message.routing_key == "pipeline.lung.export-done"
    done = completed(message)
    assert (done.export_id, done.status) == (request.export_id, ExportStatus.SUCCEEDED)


@pytest.mark.backends(RABBITMQ_S3)
def test_a_completion_no_queue_takes_yet_is_offered_until_one_does(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    keys = export.put_instances(ct_series(inbox, 1))
    request = ExportRequested(
        export_id=new_export_id(),
        destinations=("pacs",),
        object_keys=keys,
        reply_routing_key="pipeline.late.export-done",
    )
    with Storescp(tmp_path / "pacs") as pacs:
        process = export.start(export.config([destination("pacs", pacs.port)]))
        export.publish(request)
        wait_until(
            lambda: "offered again" in process.log_text(), 30, "the completion returned unrouted"
        )
        # The requester's queue comes late; the request itself was acknowledged meanwhile.
        with export.completions(("pipeline.late.export-done",)) as late:
            (message,) = late.wait_for(1, timeout=30)
            late.assert_no_more(timeout=7)  # delivered once: no longer offered
        # Recorded after the broker's confirmation, with an fsync that a busy disk may slow.
        wait_until(
            lambda: "delivered to pipeline.late.export-done at last" in process.log_text(),
            30,
            "export recording the completion as delivered",
        )
    assert completed(message).export_id == request.export_id
    assert len(pacs.received_files()) == 1


def test_no_room_to_fetch_fails_the_instance_after_the_retries_and_export_says_so(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    (big,) = ct_series(inbox / "big", 1, rows=1024, cols=1024, seed=5)  # 2 MiB of pixels
    small = ct_series(inbox / "small", 2, seed=6)
    keys = export.put_instances([*small, big])
    request = ExportRequested(export_id=new_export_id(), destinations=("pacs",), object_keys=keys)
    with (
        small_filesystem(tmp_path / "export-state", "1m") as state_dir,
        Storescp(tmp_path / "pacs") as pacs,
        export.completions() as completions,
    ):
        config = export.config([destination("pacs", pacs.port)], state_dir=str(state_dir))
        process = export.start(config)
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=30)
        status, body = process.http_get("/readyz")
        received = len(pacs.received_files())
        log = process.log_text()
        stop_export_with_nothing_left(process, export.ingest, export.queue, completions)

    (result,) = completed(message).destinations
    assert (result.instances_sent, result.instances_failed, received) == (2, 1, 2)
    (failed,) = [i for i in result.instances if i.status is InstanceOutcome.FAILED]
    assert failed.object_key == keys[-1]
    assert failed.error is not None
    assert "no room in the working directory" in failed.error
    assert "No space left on device" in failed.error
    # Retried as often as a destination that is down, then reported; not put back for ever.
    assert "(retry 2 of 2)" in log
    assert "put back for later" not in log
    assert status == 503
    assert "export-working-space" in body


def test_echo_command_exits_0_only_when_the_destination_answers(
    export: Export, tmp_path: Path, refusing_port: int
) -> None:
    with Storescp(tmp_path / "pacs") as pacs:
        config_path = export.write_config(
            export.config([destination("pacs", pacs.port), destination("closed", refusing_port)])
        )
        answered = run_cli(config_path, "echo", "pacs")
        closed = run_cli(config_path, "echo", "closed")
        unknown = run_cli(config_path, "echo", "nowhere")
    assert answered.returncode == 0, answered
    assert "C-ECHO pacs: success" in answered.stdout
    assert closed.returncode == 1, closed
    assert "C-ECHO closed: " in closed.stdout
    assert "success" not in closed.stdout
    assert unknown.returncode == 2, unknown  # as any argument a command cannot use
    assert "unknown destination 'nowhere'" in unknown.stderr


def test_send_command_waits_for_the_completion_and_prints_it(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    keys = export.put_instances(ct_series(inbox, 2))
    association_id = keys[0].split("/")[0]
    missing = object_key(new_association_id(), *(derived_uid("missing", n) for n in range(3)))
    with Storescp(tmp_path / "pacs") as pacs:
        process = export.start(export.config([destination("pacs", pacs.port)]))
        sent = run_cli(
            process.config_path, "send", "--to", "pacs", "--association", association_id, "--wait"
        )
        failed = run_cli(process.config_path, "send", "--to", "pacs", missing, "--wait")
        received = pacs.received_files()

    assert sent.returncode == 0, sent
    assert re.search(r"^export cli-[0-9a-f-]+: succeeded$", sent.stdout, re.MULTILINE), sent
    assert "pacs: succeeded, sent 2, failed 0" in sent.stdout
    assert len(received) == 2
    assert failed.returncode == 1, failed
    assert re.search(r"^export cli-[0-9a-f-]+: failed$", failed.stdout, re.MULTILINE), failed
    assert f"{missing}: failed (object does not exist)" in failed.stdout


def test_a_failure_status_fails_that_instance_only(export: Export, inbox: Path) -> None:
    series = ct_series(inbox, 5)
    refused, warned = series[1].uids.sop_instance, series[2].uids.sop_instance
    listed = series[4].uids.sop_instance  # 0x0107, attribute list error: a warning too
    keys = export.put_instances(series)
    request = ExportRequested(export_id=new_export_id(), destinations=("scp",), object_keys=keys)
    with (
        ScriptedScp(
            [(CT_IMAGE_STORAGE, [ExplicitVRLittleEndian])],
            statuses={refused: 0xA700, warned: 0xB000, listed: 0x0107},
        ) as scp,
        export.completions() as completions,
    ):
        process = export.start(export.config([destination("scp", scp.port, scp.ae_title)]))
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=30)

    done = completed(message)
    assert done.status is ExportStatus.PARTIALLY_FAILED
    (result,) = done.destinations
    assert (result.status, result.instances_sent, result.instances_failed) == (
        ExportStatus.PARTIALLY_FAILED,
        4,
        1,
    )
    outcomes = {i.sop_instance_uid: (i.status, i.dicom_status) for i in result.instances}
    assert outcomes == {
        series[0].uids.sop_instance: (InstanceOutcome.SENT, 0x0000),
        refused: (InstanceOutcome.FAILED, 0xA700),
        warned: (InstanceOutcome.SENT, 0xB000),
        series[3].uids.sop_instance: (InstanceOutcome.SENT, 0x0000),
        listed: (InstanceOutcome.SENT, 0x0107),
    }
    (failure,) = [i for i in result.instances if i.status is InstanceOutcome.FAILED]
    assert failure.error is not None
    assert "0xA700" in failure.error
    # A failure status is the destination's answer: not retried, one association in all.
    assert (scp.associations, len(scp.stores)) == (1, 5)
    # Each request of the association has a Message ID of its own.
    assert [store.message_id for store in scp.stores] == [1, 2, 3, 4, 5]
    assert "retried in" not in process.log_text()


def test_each_instance_not_sent_says_why(export: Export, inbox: Path) -> None:
    """The destination aborts on the second C-STORE: the first was sent, the second has no
    answer, and the rest never had their turn; each result says its own reason."""
    series = ct_series(inbox, 4)
    keys = export.put_instances(series)
    request = ExportRequested(export_id=new_export_id(), destinations=("scp",), object_keys=keys)
    with (
        ScriptedScp(
            [(CT_IMAGE_STORAGE, [ExplicitVRLittleEndian])],
            abort_on=[series[1].uids.sop_instance],
        ) as scp,
        export.completions() as completions,
    ):
        export.start(export.config([destination("scp", scp.port, scp.ae_title)], retries=0))
        export.publish(request)
        (message,) = completions.wait_for(1, timeout=30)

    (result,) = completed(message).destinations
    errors = [(i.sop_instance_uid, i.status, i.error) for i in result.instances]
    assert errors == [
        (series[0].uids.sop_instance, InstanceOutcome.SENT, None),
        (
            series[1].uids.sop_instance,
            InstanceOutcome.FAILED,
            "no C-STORE response from the destination",
        ),
        *[
            (
                s.uids.sop_instance,
                InstanceOutcome.FAILED,
                "the destination aborted before this instance's turn",
            )
            for s in series[2:]
        ],
    ]
