"""Generated malformed export requests: CloudEvents with missing or wrong attributes, wrong
content types, binary and structured mode mixed up, data that is not JSON or not the request's
shape, wrong types, over-long and non-ASCII values, object keys with path characters. Each is
dead-lettered; a request the contract calls well-formed but that cannot be done (an unknown
destination, nothing stored to send) gets a failed completion instead. The consumer goes on."""

from __future__ import annotations

import collections
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from contracts.export import (
    ExportRequested,
    ExportStatus,
    InstanceOutcome,
)
from tests.support.export import Export, completed, destination, export_harness, new_export_id
from tests.support.factories import ct_series
from tests.support.hostile_messages import KNOWN, Fresh
from tests.support.hostile_requests import FAMILIES
from tests.support.ingest import RABBITMQ_S3, Ingest
from tests.support.settled import stop_export_with_nothing_left
from tests.support.storescp import Storescp


@pytest.fixture
def export(ingest: Ingest, tmp_path: Path) -> Iterator[Export]:
    with export_harness(ingest, tmp_path) as harness:
        yield harness


@pytest.mark.backends(RABBITMQ_S3)
def test_generated_malformed_requests_are_dead_lettered_and_the_consumer_goes_on(
    export: Export, inbox: Path, tmp_path: Path, seed: int
) -> None:
    keys = export.put_instances(ct_series(inbox, 1))
    valid = ExportRequested(export_id=new_export_id(), destinations=(KNOWN,), object_keys=keys)
    dead_total = 0
    completions_seen = 0
    families: collections.Counter[str] = collections.Counter()
    with Storescp(tmp_path / KNOWN) as pacs, export.completions() as completions:
        process = export.start(export.config([destination(KNOWN, pacs.port)]))

        @settings(
            max_examples=25,  # each sends one message of every family: 225 messages
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            # No shrinking: after a failure the queues hold what the failed example left, so
            # a replay would not see what the first run saw. The example is printed whole.
            phases=[Phase.generate],
        )
        @hypothesis_seed(seed)
        @given(data=st.data())
        def each_family_once(data: st.DataObject) -> None:
            nonlocal dead_total, completions_seen
            # All drawn before any is published: hypothesis may abandon an example half-way
            # drawn, and what it had published would then be counted with the next one.
            sent = [
                data.draw(family(Fresh(new_export_id(), str(uuid.uuid4()))), label=family.__name__)
                for family in data.draw(st.permutations(FAMILIES), label="order")
            ]
            for message in sent:
                export.publish_raw(
                    message.body, content_type=message.content_type, headers=message.headers
                )
            dead = [m for m in sent if m.export_id is None]
            if dead:
                taken = export.dead_letters(len(dead), timeout=20)
                assert sorted(m.body for m in taken) == sorted(m.body for m in dead)
            dead_total += len(dead)
            families.update(m.family for m in sent)
            answered = {m.export_id: m for m in sent if m.export_id is not None}
            arrived = completions.wait_for(completions_seen + len(answered), timeout=30)
            results = {done.export_id: done for done in map(completed, arrived[completions_seen:])}
            completions_seen += len(answered)
            assert sorted(results) == sorted(answered)
            for export_id, done in results.items():
                expected = answered[export_id]
                assert done.status is ExportStatus.FAILED
                assert done.correlation == expected.correlation
                assert [d.name for d in done.destinations] == list(expected.errors)
                for result in done.destinations:
                    assert result.status is ExportStatus.FAILED
                    assert result.instances
                    for instance in result.instances:
                        assert instance.status is InstanceOutcome.FAILED
                        assert instance.error is not None
                        assert expected.errors[result.name] in instance.error

        each_family_once()
        # The consumer goes on: a valid request afterwards is carried out.
        export.publish(valid)
        (message,) = completions.wait_for(completions_seen + 1, timeout=30)[-1:]
        assert process.is_running()
        stop_export_with_nothing_left(process, export.ingest, export.queue, completions)
        assert len(pacs.received_files()) == 1

    print(sorted(families.items()))
    done = completed(message)
    assert (done.export_id, done.status) == (valid.export_id, ExportStatus.SUCCEEDED)
    log = process.log_text()
    assert log.count(" dead-lettered: ") == dead_total
    assert "failed unexpectedly" not in log  # every one was refused as invalid, none crashed
    assert "Traceback" not in log
    # Nothing written outside the service's directories, and nothing left in its work area.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["export-1", "export-state", "in", KNOWN]
    )
    assert sorted(p.name for p in (tmp_path / "export-1").iterdir()) == [
        "gateway.log",
        "gateway.toml",
        "ports.json",
    ]
    assert list((tmp_path / "export-state" / "work").iterdir()) == []
    assert {p.name for p in (tmp_path / "export-state").iterdir()} <= {
        "ledger.sqlite3",
        "ledger.sqlite3-wal",
        "ledger.sqlite3-shm",
        "work",
    }
