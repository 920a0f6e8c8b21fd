"""Stored objects kept ``storage.retention_days``: a bucket lifecycle rule on S3 (read back from
the server), a sweep on the file store."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from gateway.objectstore import RETENTION_RULE_ID, SECONDS_PER_DAY
from tests.support import dcmtk
from tests.support.factories import ct_series
from tests.support.ingest import EMBEDDED, RABBITMQ_S3, Ingest, released
from tests.support.net import wait_until
from tests.support.settled import wait_until_handed_on

RETENTION_DAYS = 7


def rules(client: Minio, bucket: str) -> dict[str, int | None]:
    config = client.get_bucket_lifecycle(bucket)
    return {
        str(rule.rule_id): None if rule.expiration is None else rule.expiration.days
        for rule in (config.rules if config else [])
    }


@pytest.mark.backends(RABBITMQ_S3)
def test_retention_is_a_lifecycle_rule_beside_the_buckets_own(ingest: Ingest) -> None:
    client = ingest.s3.client()
    client.make_bucket(ingest.bucket)
    theirs = Rule(
        ENABLED,
        rule_filter=Filter(prefix="scratch/"),
        rule_id="theirs",
        expiration=Expiration(days=1),
    )
    client.set_bucket_lifecycle(ingest.bucket, LifecycleConfig([theirs]))
    config = ingest.config()
    config["storage"]["retention_days"] = RETENTION_DAYS
    gateway = ingest.start(config)
    expected = {"theirs": 1, RETENTION_RULE_ID: RETENTION_DAYS}
    wait_until(lambda: rules(client, ingest.bucket) == expected, 15, "the rule is set")
    assert f"expire {RETENTION_DAYS} days after they are stored" in gateway.log_text()
    gateway.stop()

    del config["storage"]["retention_days"]  # off again: ours goes, theirs stays
    ingest.start(config)
    wait_until(lambda: rules(client, ingest.bucket) == {"theirs": 1}, 15, "the rule is removed")


@pytest.mark.backends(EMBEDDED)
def test_the_file_store_removes_objects_past_retention(ingest: Ingest, inbox: Path) -> None:
    gateway = ingest.start()
    with ingest.events() as events:
        for seed in (1, 2):
            series = ct_series(inbox / str(seed), 2, seed=seed)
            dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series], "GATEWAY").check()
        old, new = (released(message) for message in events.wait_for(2))
    wait_until_handed_on(ingest.workdir / "spool")
    gateway.stop()
    stored_long_ago = time.time() - (RETENTION_DAYS + 1) * SECONDS_PER_DAY
    for instance in old.instances:
        os.utime(ingest.object_root / instance.object_key, (stored_long_ago, stored_long_ago))

    config = ingest.config()
    config["storage"]["retention_days"] = RETENTION_DAYS
    ingest.start(config)
    wait_until(
        lambda: not (ingest.object_root / old.association_id).exists(),
        15,
        "the old association's objects and folders are removed",
    )
    assert set(ingest.objects()) == {instance.object_key for instance in new.instances}
