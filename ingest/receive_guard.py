"""The receive limits of one association, applied to its data sets as they are written.

An :class:`AssociationGuard` is registered for an admitted association's receiving thread
(ingest/incoming.py); each data set it opens gets an :class:`InstanceGuard`, asked before every
write. A limit crossed (ingest/receive_limits.py) refuses that data set: it is written no
further and its file is emptied at once, the rest of its fragments are read and dropped, and
its C-STORE is answered 0xA700 when its last fragment arrives; the association goes on. A
trickle aborts the association as its network timeout would. Each is logged once, when it
happens, and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gateway.dicom_status import Status
from gateway.errors import LimitCrossed
from gateway.logs import fields
from gateway.metrics import ListenerCounters
from ingest.associations import ActiveAssociation
from ingest.policy import SpoolUsage
from ingest.receive_limits import (
    SPOOL_CHECK_BYTES,
    Crossed,
    ReceiveLimits,
    ReceiveRate,
    bytes_crossed,
    refused_before_data,
    spool_crossed,
)

log = logging.getLogger(__name__)

_MIB = 1024 * 1024


class AssociationGuard:
    """The receive limits of one admitted association (its data sets arrive one at a time,
    on one thread: no asynchronous operations are negotiated)."""

    def __init__(
        self,
        limits: ReceiveLimits,
        active: ActiveAssociation,
        *,
        spool_usage: Callable[[], SpoolUsage],
        counters: ListenerCounters,
        abort: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.active = active
        self.spool_usage = spool_usage
        self.counters = counters
        self.abort = abort
        self.clock = clock
        #: Bytes written since the spool was last looked at, over all its data sets.
        self.unchecked_bytes = 0

    def begin(self) -> InstanceGuard:
        with self.active.lock:
            stored_instances, stored_bytes = self.active.instances, self.active.bytes
        return InstanceGuard(self, stored_instances, stored_bytes)

    def refuse(self, crossed: Crossed, figures: str) -> LimitCrossed:
        """Log and count a data set refused for ``crossed``; the refusal to record."""
        active = self.active
        log.warning(
            "association %s: C-STORE refused with 0x%04X while it arrived (limit=%s): %s "
            "(calling=%s from %s:%d)",
            active.association_id,
            Status.OUT_OF_RESOURCES,
            crossed.value,
            figures,
            active.calling_ae_title,
            active.remote_host,
            active.remote_port,
            extra=fields(
                event="receive_limit",
                association_id=active.association_id,
                limit=crossed.value,
                calling_ae=active.calling_ae_title,
                remote=f"{active.remote_host}:{active.remote_port}",
            ),
        )
        self.counters.receive_limits_crossed.labels(crossed.value).inc()
        return LimitCrossed(Status.OUT_OF_RESOURCES, f"{crossed.value}: {figures}")

    def abort_trickle(self, received: int, seconds: float) -> None:
        active = self.active
        log.warning(
            "association %s: aborting it (limit=%s): %d bytes of an instance arrived in the "
            "last %.1f s, below min_receive_bytes_per_second (%d) (calling=%s from %s:%d)",
            active.association_id,
            Crossed.RECEIVE_RATE.value,
            received,
            seconds,
            self.limits.min_bytes_per_second,
            active.calling_ae_title,
            active.remote_host,
            active.remote_port,
            extra=fields(
                event="receive_limit",
                association_id=active.association_id,
                limit=Crossed.RECEIVE_RATE.value,
                calling_ae=active.calling_ae_title,
                remote=f"{active.remote_host}:{active.remote_port}",
            ),
        )
        self.counters.receive_limits_crossed.labels(Crossed.RECEIVE_RATE.value).inc()
        self.abort()


class InstanceGuard:
    """The receive limits, applied to one data set of an association as it is written."""

    def __init__(self, guard: AssociationGuard, stored_instances: int, stored_bytes: int) -> None:
        self._guard = guard
        self._stored_instances = stored_instances
        self._stored_bytes = stored_bytes
        self._bytes = 0
        self._begun = False
        self._refused: LimitCrossed | None = None
        self._aborted = False
        limits = guard.limits
        self._rate = (
            ReceiveRate(limits.min_bytes_per_second, limits.rate_window_seconds, guard.clock())
            if limits.min_bytes_per_second > 0
            else None
        )

    def refusal(self, count: int) -> LimitCrossed | None:
        """Asked for every fragment until the last, refused or not: a refused data set holds
        no space, but a trickle of it still holds its association's place."""
        if self._rate is not None and not self._aborted:
            now = self._guard.clock()
            if self._rate.too_slow(count, now):
                self._aborted = True
                self._guard.abort_trickle(*self._rate.last_window(now))
                self._refused = self._refused or LimitCrossed(
                    Status.OUT_OF_RESOURCES, "its association is being aborted"
                )
        if self._refused is None:
            self._refused = self._crossed(count)
        return self._refused

    def _crossed(self, count: int) -> LimitCrossed | None:
        guard, limits = self._guard, self._guard.limits
        if not self._begun:
            self._begun = True
            crossed = refused_before_data(self._stored_instances, limits)
            if crossed is not None:
                return guard.refuse(
                    crossed,
                    f"its association stored {self._stored_instances} instances "
                    f"(max_association_instances {limits.association_instances})",
                )
        self._bytes += count
        crossed = bytes_crossed(self._bytes, self._stored_bytes, limits)
        if crossed is Crossed.INSTANCE_BYTES:
            return guard.refuse(
                crossed,
                f"the instance passed max_instance_bytes ({limits.instance_bytes})",
            )
        if crossed is Crossed.ASSOCIATION_BYTES:
            return guard.refuse(
                crossed,
                f"its association stored {self._stored_bytes} bytes, and with this instance's "
                f"{self._bytes} so far passed max_association_bytes "
                f"({limits.association_bytes})",
            )
        guard.unchecked_bytes += count
        if guard.unchecked_bytes >= SPOOL_CHECK_BYTES:
            guard.unchecked_bytes = 0
            usage = guard.spool_usage()
            if spool_crossed(usage, limits) is not None:
                return guard.refuse(
                    Crossed.SPOOL_WATERMARK,
                    f"the spool is {usage.used_percent:.1f}% used with "
                    f"{usage.free_bytes / _MIB:.1f} MiB free (storage_watermark_percent "
                    f"{limits.watermark_percent:g}, reserved_storage_gb {limits.reserved_gb:g}); "
                    f"the instance had {self._bytes / _MIB:.1f} MiB",
                )
        return None
