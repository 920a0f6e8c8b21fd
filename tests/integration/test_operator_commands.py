"""``dicom-gateway associations``: what an operator can see and do with what ingest holds,
through the real CLI, next to a running gateway.

An association is set aside (``failed``) when storing it kept failing for a reason other than an
outage (an object store refusing its bytes, say). No storage server here refuses that way on
purpose, so the test sets one aside as the uploader does, in the journal of a stopped gateway:
its instances were received, its release recorded, nothing of it stored.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway_client.testing import GatewayProcess, gateway_environment
from tests.support import dcmtk
from tests.support.factories import ct_series
from tests.support.ingest import RABBITMQ_S3, Ingest, released
from tests.support.net import wait_until
from tests.support.prometheus import metric


def associations(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``dicom-gateway associations ARGS`` on the gateway's configuration."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dicom_gateway",
            "associations",
            *args,
            "--config",
            str(gateway.config_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=gateway_environment(),
        check=False,
    )


def set_aside(ingest: Ingest, config: dict[str, Any], inbox: Path, refusing_port: int) -> str:
    """An association received while storage refused connections, then set aside as failed
    while the gateway was stopped; its id."""
    unreachable = {
        **config,
        "storage": {**config["storage"], "endpoint": f"127.0.0.1:{refusing_port}"},
    }
    gateway = ingest.start(unreachable, until="listening")
    series = ct_series(inbox, 2)
    dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series], "GATEWAY").check()
    gateway.stop()
    with sqlite3.connect(ingest.workdir / "spool" / "journal.sqlite3") as journal:
        ((association_id,),) = journal.execute("SELECT association_id FROM associations")
        journal.execute("UPDATE associations SET state = 'failed'")
    journal.close()
    return str(association_id)


@pytest.mark.backends(RABBITMQ_S3)
def test_a_failed_association_is_listed_retried_and_announced(
    ingest: Ingest, inbox: Path, refusing_port: int
) -> None:
    config = ingest.config()
    association_id = set_aside(ingest, config, inbox, refusing_port)
    with ingest.events() as events:
        gateway = ingest.start(config)
        listed = associations(gateway, "list")
        assert listed.returncode == 0, listed.stderr
        (line,) = listed.stdout.splitlines()
        assert line.startswith(f"{association_id} failed called=GATEWAY")
        assert "instances=2 stored=0" in line
        _, text = gateway.http_get("/metrics")
        assert metric(text, "dicom_gateway_associations_failed") == 1
        status, text = gateway.http_get("/readyz")
        assert status == 200  # ready: what is set aside needs an operator, not a restart
        assert json.loads(text)["attention"] == {
            "ingest-set-aside": "1 association(s) failed and 0 event(s) set aside: "
            "see dicom-gateway associations list"
        }

        retried = associations(gateway, "retry", association_id)
        assert retried.returncode == 0, retried.stderr
        (message,) = events.wait_for(1)
        assert released(message).association_id == association_id
        assert released(message).instance_count == 2
        wait_until(lambda: associations(gateway, "list").stdout == "", 10, "the journal is empty")
        assert f"association {association_id}: retried by an operator" in gateway.log_text()
        assert "attention" not in json.loads(gateway.http_get("/readyz")[1])

        # A pipeline lost it: published again, the same event with the same id.
        again = associations(gateway, "reannounce", association_id)
        assert again.returncode == 0, again.stderr
        assert "published again to association.released.default" in again.stdout
        _, repeated = events.wait_for(2)
    assert repeated.message_id == message.message_id == association_id
    assert repeated.body == message.body


@pytest.mark.backends(RABBITMQ_S3)
def test_a_failed_association_is_dropped_only_when_asked_twice(
    ingest: Ingest, inbox: Path, refusing_port: int
) -> None:
    config = ingest.config()
    association_id = set_aside(ingest, config, inbox, refusing_port)
    gateway = ingest.start(config)

    for args, error in [
        (("show", "hello"), "'hello' is not an association id"),
        (("show", "0b5c8a6e-2f1d-4c3b-9a7e-5d4f3c2b1a09"), "no association 0b5c8a6e"),
        (("retry",), "give an association ID"),
        (("drop", association_id), "add --yes"),
        (("reannounce", association_id), "it has no event yet"),
        (("reannounce", "0b5c8a6e-2f1d-4c3b-9a7e-5d4f3c2b1a09"), "no published event"),
    ]:
        result = associations(gateway, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert error in result.stderr
        assert "Traceback" not in result.stderr
    assert associations(gateway, "show", association_id).stdout.startswith(association_id)

    dropped = associations(gateway, "drop", association_id, "--yes")
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped: 2 spooled instances" in dropped.stdout
    assert associations(gateway, "list").stdout == ""
    assert ingest.spool_files() == []
    assert ingest.objects() == {}
    again = associations(gateway, "retry", association_id)
    assert again.returncode == 2
    assert f"no association {association_id}" in again.stderr
