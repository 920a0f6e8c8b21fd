"""What ``send --wait`` says while it waits: where its request stands, read from the bus, and
the note for each state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from export.commands import retry_policy, waiting_note
from export.request_watch import Intake, amqp_intake, local_intake
from gateway.eventlog import DEAD, READY, SETTLED, TAKEN, UNSEEN, DeliveryState, EventLog
from gateway.settings import ExportSettings


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    opened = EventLog.open(tmp_path / "events.sqlite3")
    yield opened
    opened.close()


def request(log: EventLog, n: int) -> int:
    return log.append(
        "export.requested", b"{}", message_id=f"cli-{n}", content_type="application/json"
    )


def test_the_delivery_state_follows_a_request_through_the_subscription(log: EventLog) -> None:
    first = request(log, 1)
    assert log.delivery_state("export", first) == DeliveryState(UNSEEN, 0)  # no subscriber
    log.subscribe("export", "export.requested")
    assert log.delivery_state("export", first) == DeliveryState(UNSEEN, 0)  # not looked at
    (claimed,) = log.claim("export", limit=1)
    assert log.delivery_state("export", first) == DeliveryState(TAKEN, 1)
    log.requeue("export", first, delay_seconds=60)
    assert log.delivery_state("export", first) == DeliveryState(READY, 1)  # put back
    second = request(log, 2)
    log.claim("export", limit=0)  # looks at the new one, takes nothing
    assert log.delivery_state("export", second) == DeliveryState(READY, 0)  # queued
    log.ack("export", claimed.event.seq)
    assert log.delivery_state("export", first) == DeliveryState(SETTLED, 0)
    log.dead_letter("export", second, "invalid")
    assert log.delivery_state("export", second) == DeliveryState(DEAD, 0)


@pytest.mark.parametrize(
    ("state", "attempts", "intake"),
    [
        (UNSEEN, 0, Intake.NOT_TAKEN),
        (READY, 0, Intake.QUEUED),
        (READY, 2, Intake.PUT_BACK),
        (TAKEN, 1, Intake.TAKEN),
        (SETTLED, 0, Intake.TAKEN),
        (DEAD, 1, Intake.REJECTED),
    ],
)
def test_the_local_event_log_intake(state: str, attempts: int, intake: Intake) -> None:
    assert local_intake(state, attempts) is intake


@pytest.mark.parametrize(
    ("consumers", "waiting", "intake"),
    [
        (None, 0, Intake.NOT_TAKEN),  # no export queue at all
        (0, 3, Intake.NOT_TAKEN),
        (1, 2, Intake.QUEUED),
        (2, 0, Intake.TAKEN),
    ],
)
def test_the_rabbitmq_intake(consumers: int | None, waiting: int, intake: Intake) -> None:
    assert amqp_intake(consumers, waiting) is intake


@pytest.mark.parametrize(
    ("retries", "backoff", "said"),
    [
        (3, (5.0, 30.0, 120.0), "retries it 3 times, after 5, 30 and 120 s"),
        (2, (0.5,), "retries it 2 times, after 0.5 and 0.5 s"),
        (1, (30.0, 60.0), "retries it 1 time, after 30 s"),
        (0, (5.0,), "does not retry it"),
    ],
)
def test_the_retry_policy_in_words(retries: int, backoff: tuple[float, ...], said: str) -> None:
    assert retry_policy(ExportSettings(retries=retries, retry_backoff_seconds=backoff)) == said


@pytest.mark.parametrize(
    ("intake", "echo_problem", "said"),
    [
        (Intake.NOT_TAKEN, None, "no export service has taken the request yet: is "),
        (Intake.QUEUED, None, "the request waits behind others for the export service"),
        (Intake.PUT_BACK, None, "the export service put the request back to try again later"),
        (Intake.REJECTED, None, "the export service rejected the request as invalid"),
        (Intake.TAKEN, None, "an export service is working on the request"),
        (
            Intake.TAKEN,
            "destination not reachable ([Errno 111] Connection refused)",
            "C-ECHO to pacs from here failed (destination not reachable ([Errno 111] Connection "
            "refused)); export retries it 3 times, after 5, 30 and 120 s, before it reports the "
            "failure",
        ),
    ],
)
def test_each_state_has_its_note(intake: Intake, echo_problem: str | None, said: str) -> None:
    note = waiting_note(intake, echo_problem, "pacs", ExportSettings())
    assert note.startswith(said)
    assert "\n" not in note
