"""Which instance is uploaded next: each association in turn, never two copies of one key at
once."""

from __future__ import annotations

from ingest.journal import SpooledInstance
from ingest.upload_queue import UploadQueue
from tests.support.journal_rows import instance

A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"


def spooled(association_id: str, number: int, spool_name: str = "") -> SpooledInstance:
    return instance(association_id, f"1.2.3.{number}", number, spool_name)


def taken(queue: UploadQueue) -> list[tuple[str, str]]:
    order = []
    while (instance := queue.take()) is not None:
        order.append((instance.association_id, instance.sop_instance_uid))
    return order


def test_associations_are_served_in_turn() -> None:
    queue = UploadQueue()
    queue.add([spooled(A, n) for n in (1, 2, 3)])
    queue.add([spooled(B, n) for n in (1, 2)])
    assert taken(queue) == [
        (A, "1.2.3.1"),
        (B, "1.2.3.1"),
        (A, "1.2.3.2"),
        (B, "1.2.3.2"),
        (A, "1.2.3.3"),
    ]
    assert queue.in_progress() == 5
    assert queue.waiting() == 0


def test_an_instance_waiting_or_uploading_is_not_queued_twice() -> None:
    queue = UploadQueue()
    assert queue.add([spooled(A, 1)]) == 1
    assert queue.add([spooled(A, 1), spooled(A, 2)]) == 1
    first = queue.take()
    assert first is not None
    assert queue.add([first]) == 0  # being uploaded
    queue.finished(first)
    assert queue.add([first]) == 1  # e.g. its upload failed and the journal still lists it


def test_a_later_copy_of_a_key_waits_until_the_earlier_upload_ends() -> None:
    queue = UploadQueue()
    earlier, later = spooled(A, 1, "first.dcm"), spooled(A, 1, "second.dcm")
    queue.add([earlier, later])
    assert queue.take() == earlier
    assert queue.take() is None  # the same key is on its way
    queue.finished(earlier)
    assert queue.take() == later


def test_dropping_an_association_keeps_its_uploads_in_progress_counted() -> None:
    queue = UploadQueue()
    queue.add([spooled(A, n) for n in (1, 2, 3)])
    uploading = queue.take()
    assert uploading is not None
    queue.drop(A)
    assert queue.waiting() == 0
    assert queue.uploading(A)
    assert queue.holds(A)
    queue.finished(uploading)
    assert not queue.holds(A)
    assert queue.take() is None
