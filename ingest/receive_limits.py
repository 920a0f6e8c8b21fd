"""Limits on what one association may hold while its data sets arrive: pure decisions.

Admission (ingest/policy.py) looks at the spool once, when an association asks to start; one
association could then fill it on its own with one endless C-STORE, or hold it with a
trickle, and every other sender was turned away as congestion. These decisions bound one
instance and one association, and look at the spool again while data arrives:

- an instance that would cross a limit (its own bytes, its association's bytes or instances,
  the spool's watermark or reserve) is refused with 0xA700; the association goes on;
- a peer that, in the middle of an instance, delivers less than a minimum rate over a sliding
  window is aborted as a silent one is.

ingest/receive_guard.py applies them to each arriving data set.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from gateway.settings import IngestSettings
from ingest.policy import SpoolUsage, spool_has_room

#: How much an association writes between two looks at the spool's space. A look is one
#: ``statvfs`` (microseconds); writing a MiB takes a millisecond or more, so the look costs
#: under 1 % even on the fastest disk, and an instance crosses the watermark by at most this.
SPOOL_CHECK_BYTES = 1024 * 1024
#: Slots of the sliding window of the receive rate: the window moves on by this fraction.
RATE_SLOTS = 6


class Crossed(StrEnum):
    """Which limit an instance crossed; the value names it in the log and the metric."""

    INSTANCE_BYTES = "instance_bytes"
    ASSOCIATION_BYTES = "association_bytes"
    ASSOCIATION_INSTANCES = "association_instances"
    SPOOL_WATERMARK = "spool_watermark"
    RECEIVE_RATE = "receive_rate"


@dataclass(frozen=True)
class ReceiveLimits:
    """The receive limits of the settings; None: no such limit."""

    instance_bytes: int | None
    association_bytes: int | None
    association_instances: int | None
    watermark_percent: float
    reserved_gb: float
    #: 0: no minimum.
    min_bytes_per_second: int
    rate_window_seconds: float

    @classmethod
    def of(cls, settings: IngestSettings) -> ReceiveLimits:
        return cls(
            instance_bytes=settings.max_instance_bytes,
            association_bytes=settings.max_association_bytes,
            association_instances=settings.max_association_instances,
            watermark_percent=settings.storage_watermark_percent,
            reserved_gb=settings.reserved_storage_gb,
            min_bytes_per_second=settings.min_receive_bytes_per_second,
            rate_window_seconds=settings.receive_rate_window_seconds,
        )


def refused_before_data(stored_instances: int, limits: ReceiveLimits) -> Crossed | None:
    """Whether a new instance is refused before any of its data: its association has stored
    as many instances as it may."""
    maximum = limits.association_instances
    if maximum is not None and stored_instances >= maximum:
        return Crossed.ASSOCIATION_INSTANCES
    return None


def bytes_crossed(instance_bytes: int, stored_bytes: int, limits: ReceiveLimits) -> Crossed | None:
    """Whether an instance of ``instance_bytes`` so far crosses a byte limit, its association
    having stored ``stored_bytes`` before it. The instance's own limit is named first: it is
    the one a sender can do something about (send it elsewhere), whatever else it holds."""
    if limits.instance_bytes is not None and instance_bytes > limits.instance_bytes:
        return Crossed.INSTANCE_BYTES
    if (
        limits.association_bytes is not None
        and stored_bytes + instance_bytes > limits.association_bytes
    ):
        return Crossed.ASSOCIATION_BYTES
    return None


def spool_crossed(usage: SpoolUsage, limits: ReceiveLimits) -> Crossed | None:
    """Whether the spool is past the point where admission turns associations away: the
    instance being written then is the one that crossed it."""
    if spool_has_room(usage, limits.watermark_percent, limits.reserved_gb):
        return None
    return Crossed.SPOOL_WATERMARK


class ReceiveRate:
    """The bytes of one instance as they arrive, over a sliding window, against a minimum.

    The window is cut into :data:`RATE_SLOTS` slots; at each arrival the slots of the last
    window (the current one partly elapsed) are summed, so the rate is judged over between
    ``(RATE_SLOTS - 1) / RATE_SLOTS`` of the window and all of it, and a trickle is seen at the
    first arrival once a whole window of it has passed. Nothing is judged before the instance
    has been arriving for one window.

    Judged at arrivals only, a window always ends with a whole PDU that was on its way during
    it: a steady sender at the minimum rate or above is never judged too slow, whatever its
    PDU size. A peer that sends nothing at all is the network timeout's.
    """

    def __init__(self, min_bytes_per_second: int, window_seconds: float, started: float) -> None:
        self._minimum = min_bytes_per_second
        self._window = window_seconds
        self._slot_seconds = window_seconds / RATE_SLOTS
        self._started = started
        self._slots: deque[tuple[int, int]] = deque()  # (slot number, bytes), oldest first
        self._in_window = 0

    def too_slow(self, count: int, now: float) -> bool:
        """``count`` bytes arrived at ``now`` (seconds on the clock ``started`` was read from):
        whether the last window brought less than the minimum rate."""
        slot = int((now - self._started) // self._slot_seconds)
        if self._slots and self._slots[-1][0] == slot:
            self._slots[-1] = (slot, self._slots[-1][1] + count)
        else:
            self._slots.append((slot, count))
        self._in_window += count
        oldest = slot - RATE_SLOTS + 1
        while self._slots[0][0] < oldest:
            self._in_window -= self._slots.popleft()[1]
        if now - self._started < self._window:
            return False
        span = now - (self._started + oldest * self._slot_seconds)
        return self._in_window < self._minimum * span

    def last_window(self, now: float) -> tuple[int, float]:
        """The bytes of the window judged last, and its length in seconds (for the log)."""
        oldest = int((now - self._started) // self._slot_seconds) - RATE_SLOTS + 1
        return self._in_window, now - (self._started + oldest * self._slot_seconds)
