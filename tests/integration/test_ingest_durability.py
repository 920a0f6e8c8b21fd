"""Nothing accepted on a released association is lost; nothing aborted is handed on."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.netdicom.ae import PromptAE
from gateway_client.testing import GatewayProcess
from tests.support import dcmtk
from tests.support.factories import ct_series, large_instance
from tests.support.ingest import RABBITMQ_S3, Ingest, released
from tests.support.link import Link
from tests.support.net import wait_until
from tests.support.proc import memory_kib
from tests.support.settled import wait_until_handed_on
from tests.support.wire import RecordingProxy


def ended(gateway: GatewayProcess, outcome: str, calling: str = "STORESCU") -> bool:
    """Whether the log has the end line of the test's own association (``calling``'s)."""
    return any(
        f" {outcome}: " in line and f"calling={calling} " in line
        for line in gateway.log_text().splitlines()
    )


def outbox_ids(ingest: Ingest) -> list[str]:
    """Event ids waiting in the gateway's journal (white-box: to kill it at the right moment)."""
    journal = ingest.workdir / "spool" / "journal.sqlite3"
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5) as db:
        return [row[0] for row in db.execute("SELECT event_id FROM outbox")]


def test_abort_at_the_end_publishes_nothing_and_removes_the_files(
    ingest: Ingest, inbox: Path
) -> None:
    gateway = ingest.start()
    series = ct_series(inbox, 4)
    with ingest.events() as events:
        # --abort: storescu sends everything (each answered with success), then aborts.
        dcmtk.storescu(
            gateway.host, gateway.port, [s.path for s in series], "GATEWAY", extra_args=["--abort"]
        )
        wait_until(lambda: ended(gateway, "aborted"), 10, "the abort is logged")
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    assert ingest.spool_files() == []
    assert ingest.objects() == {}
    assert "instances=4" in gateway.log_text()


def test_connection_dropped_mid_transfer_publishes_nothing(ingest: Ingest, inbox: Path) -> None:
    gateway = ingest.start()
    small = ct_series(inbox, 3)
    large = large_instance(inbox, 200 * 1024 * 1024)
    with ingest.events() as events, RecordingProxy(gateway.host, gateway.port) as proxy:
        sender = threading.Thread(
            target=dcmtk.storescu,
            args=("127.0.0.1", proxy.port, [*(s.path for s in small), large.path], "GATEWAY"),
        )
        sender.start()
        wait_until(
            lambda: bool(proxy.connections) and len(proxy.connections[0].client_bytes) > 50_000_000,
            60,
            "the large instance is under way",
        )
        proxy.sever()
        sender.join(60)
        wait_until(lambda: ended(gateway, "aborted"), 15, "the abort is logged")
        # At once, not after the maintenance sweep: the partial data set goes with the abort.
        wait_until(
            lambda: ingest.spool_files() == [], 5, "the aborted association's files are removed"
        )
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    assert ingest.objects() == {}


def test_aborted_files_are_kept_for_the_configured_delay(ingest: Ingest, inbox: Path) -> None:
    gateway = ingest.start(aborted_cleanup_seconds=4)
    series = ct_series(inbox, 2)
    dcmtk.storescu(
        gateway.host, gateway.port, [s.path for s in series], "GATEWAY", extra_args=["--abort"]
    )
    wait_until(lambda: ended(gateway, "aborted"), 10, "the abort is logged")
    aborted_at = time.monotonic()
    assert len(ingest.spool_files()) == 2
    wait_until(lambda: time.monotonic() - aborted_at > 2, 5, "half the delay")
    assert len(ingest.spool_files()) == 2, "removed before aborted_cleanup_seconds"
    wait_until(lambda: ingest.spool_files() == [], 15, "files removed after the delay")
    assert ingest.objects() == {}


@pytest.fixture
def broker_link(ingest: Ingest) -> Iterator[Link]:
    host, _, port = ingest.amqp_url.split("@")[-1].rstrip("/").partition(":")
    with Link(host, int(port or 5672)) as link:
        yield link


def _through(ingest: Ingest, link: Link) -> str:
    prefix, _, rest = ingest.amqp_url.partition("@")
    vhost = rest.partition("/")[2]
    return f"{prefix}@{link.endpoint}/{vhost}"


def released_while_the_broker_is_cut(
    ingest: Ingest, inbox: Path, broker_link: Link, instances: int
) -> tuple[GatewayProcess, str]:
    """Start a gateway that reaches RabbitMQ through ``broker_link``, cut the link, send one
    association and return once its event waits in the outbox (with the event's id)."""
    config = ingest.config()
    config["broker"]["url"] = _through(ingest, broker_link)
    gateway = ingest.start(config)
    series = ct_series(inbox, instances)
    broker_link.cut()
    dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series], "GATEWAY").check()
    wait_until(lambda: len(outbox_ids(ingest)) == 1, 20, "the event waits in the outbox")
    (event_id,) = outbox_ids(ingest)
    return gateway, event_id


@pytest.mark.backends(RABBITMQ_S3)
def test_broker_outage_delays_the_event_and_never_drops_it(
    ingest: Ingest, inbox: Path, broker_link: Link
) -> None:
    with ingest.events() as events:
        _gateway, waiting = released_while_the_broker_is_cut(ingest, inbox, broker_link, 3)
        # The event waits in the outbox (it leaves only once confirmed), and nothing arrived.
        events.assert_no_more()
        assert outbox_ids(ingest) == [waiting]
        broker_link.restore()
        (message,) = events.wait_for(1, timeout=60)
        wait_until(lambda: outbox_ids(ingest) == [], 10, "the outbox empties once confirmed")
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    assert released(message).association_id == waiting
    assert released(message).instance_count == 3


@pytest.mark.backends(RABBITMQ_S3)
def test_storage_outage_keeps_instances_spooled_until_it_returns(
    ingest: Ingest, inbox: Path
) -> None:
    host, port = ingest.s3.endpoint.rsplit(":", 1)
    with Link(host, int(port)) as s3_link:
        config = ingest.config()
        config["storage"]["endpoint"] = s3_link.endpoint
        s3_link.cut()
        gateway = ingest.start(config, until="listening")  # not ready without S3
        series = ct_series(inbox, 3)
        with ingest.events() as events:
            # Success is answered from the spool while S3 is down: nothing waits on S3.
            dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series], "GATEWAY").check()
            # The upload has been tried and has failed; nothing was announced.
            wait_until(lambda: "storing failed" in gateway.log_text(), 15, "an upload fails")
            assert outbox_ids(ingest) == []
            events.assert_no_more()
            assert len(ingest.spool_files()) == 3
            s3_link.restore()
            (message,) = events.wait_for(1, timeout=90)
    data = released(message)
    assert set(ingest.objects()) == {i.object_key for i in data.instances}
    assert "storing failed" in gateway.log_text()
    wait_until(lambda: ingest.spool_files() == [], 10, "spool files go once stored")


@pytest.mark.backends(RABBITMQ_S3)
def test_kill_after_release_then_restart_publishes_the_same_event_once(
    ingest: Ingest, inbox: Path, broker_link: Link
) -> None:
    with ingest.events() as events:
        gateway, event_id = released_while_the_broker_is_cut(ingest, inbox, broker_link, 3)
        gateway.kill()
        broker_link.restore()
        gateway.start()
        (message,) = events.wait_for(1, timeout=60)
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    data = released(message)
    assert data.association_id == event_id == message.message_id
    assert data.instance_count == 3
    assert set(ingest.objects()) == {i.object_key for i in data.instances}


def test_kill_mid_association_discards_it_on_restart(ingest: Ingest, inbox: Path) -> None:
    gateway = ingest.start()
    series = ct_series(inbox, 30, rows=256, cols=256)
    with ingest.events() as events, RecordingProxy(gateway.host, gateway.port) as proxy:
        sender = threading.Thread(
            target=dcmtk.storescu,
            args=("127.0.0.1", proxy.port, [s.path for s in series], "GATEWAY"),
        )
        sender.start()
        wait_until(lambda: len(ingest.spool_files()) >= 3, 30, "some instances are spooled")
        gateway.kill()
        sender.join(60)
        gateway.start()
        wait_until(
            lambda: ingest.spool_files() == [], 15, "the unfinished association is cleaned up"
        )
        wait_until_handed_on(ingest.workdir / "spool")
        events.assert_no_more()
    assert ingest.objects() == {}
    assert "was open when ingest stopped: discarded" in gateway.log_text()


@pytest.mark.backends(RABBITMQ_S3)
def test_sigterm_flushes_the_outbox_and_exits_zero(
    ingest: Ingest, inbox: Path, broker_link: Link
) -> None:
    with ingest.events() as events:
        gateway, _event_id = released_while_the_broker_is_cut(ingest, inbox, broker_link, 5)
        # The relay is backing off by now; the flush at shutdown must not wait for it.
        wait_until(lambda: gateway.log_text().count("event relay:") >= 3, 30, "relay retries")
        broker_link.restore()
        assert gateway.terminate(timeout=30) == 0
        (message,) = events.wait_for(1, timeout=10)
    assert released(message).instance_count == 5
    assert "ingest stopped" in gateway.log_text()


@pytest.mark.backends(RABBITMQ_S3)
def test_a_1_gib_instance_does_not_grow_the_receiver(ingest: Ingest, inbox: Path) -> None:
    gateway = ingest.start()
    instance = large_instance(inbox, 1024 * 1024 * 1024)
    assert gateway.pid is not None
    baseline = memory_kib(gateway.pid, "VmRSS")
    with ingest.events() as events:
        dcmtk.storescu(gateway.host, gateway.port, [instance.path], "GATEWAY", timeout=300).check()
        (message,) = events.wait_for(1, timeout=300)
    peak = memory_kib(gateway.pid, "VmHWM")
    (stored,) = released(message).instances
    assert stored.size > 1024 * 1024 * 1024
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 100, (
        f"receiving and uploading 1 GiB grew the gateway by {growth_mib:.0f} MiB"
    )


def test_sigterm_lets_an_open_association_finish_within_the_grace(
    ingest: Ingest, inbox: Path
) -> None:
    gateway = ingest.start(shutdown_grace_seconds=20)
    (instance,) = ct_series(inbox, 1)
    ae = PromptAE(ae_title="MODALITY")
    ae.add_requested_context(instance.uids.sop_class, [instance.uids.transfer_syntax])
    with ingest.events() as events:
        assoc = ae.associate(gateway.host, gateway.port, ae_title="GATEWAY")
        assert assoc.is_established
        assert gateway.pid is not None
        os.kill(gateway.pid, signal.SIGTERM)
        wait_until(lambda: "received SIGTERM" in gateway.log_text(), 10, "shutdown begins")
        # New associations are refused now, the open one still works.
        assert not dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY").ok
        status = assoc.send_c_store(instance.path)
        assoc.release()
        assert status.Status == 0x0000
        (message,) = events.wait_for(1, timeout=20)
    assert gateway.terminate(timeout=30) == 0
    assert released(message).instance_count == 1
