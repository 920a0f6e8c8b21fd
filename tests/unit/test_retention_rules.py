"""The gateway's lifecycle rule among a bucket's others (pure)."""

from __future__ import annotations

import pytest
from minio.commonconfig import ENABLED, Filter
from minio.lifecycleconfig import Expiration, Rule

from gateway.objectstore import RETENTION_RULE_ID
from gateway.s3store import retention_rules


def rule(rule_id: str, days: int) -> Rule:
    return Rule(
        ENABLED, rule_filter=Filter(prefix=""), rule_id=rule_id, expiration=Expiration(days=days)
    )


def described(rules: list[Rule]) -> list[tuple[str | None, int | None]]:
    return [(r.rule_id, r.expiration.days if r.expiration else None) for r in rules]


@pytest.mark.parametrize(
    ("before", "days", "after"),
    [
        ([], None, []),
        ([], 30, [(RETENTION_RULE_ID, 30)]),
        ([rule("theirs", 1)], 30, [("theirs", 1), (RETENTION_RULE_ID, 30)]),
        (
            [rule("theirs", 1), rule(RETENTION_RULE_ID, 7)],
            30,
            [("theirs", 1), (RETENTION_RULE_ID, 30)],
        ),
        ([rule("theirs", 1), rule(RETENTION_RULE_ID, 7)], None, [("theirs", 1)]),
        ([rule(RETENTION_RULE_ID, 7)], None, []),
    ],
)
def test_only_the_gateways_rule_changes(
    before: list[Rule], days: int | None, after: list[tuple[str, int]]
) -> None:
    assert described(retention_rules(before, days)) == after
