"""The Prometheus metrics of both services, one registry per process.

Each service gets its own :class:`~prometheus_client.CollectorRegistry` (never the library's
global default), built at start-up and passed down like the settings. Label values come only
from configuration (AE titles, destination names) or from small fixed sets (reject reasons,
outcomes), so the number of series stays bounded whatever peers send. The Grafana dashboard in
``compose/`` queries these names; a test checks that every name it uses exists here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "dicom_gateway"

#: Release-to-published latency is sub-second when healthy; the tail shows broker outages.
_PUBLISH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
#: One SCU association: a handful of instances to a whole study.
_ASSOCIATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class Increment(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class LabelledCounter(Protocol):
    """What the DICOM listener needs of a counter: a Prometheus one, or one that forwards."""

    def labels(self, *labelvalues: str) -> Increment: ...


@dataclass(frozen=True)
class ListenerCounters:
    """The counters the DICOM listener increments, wherever it runs.

    In worker processes they forward each increment to the parent's counters, which are the
    ones ``/metrics`` shows.
    """

    associations_accepted: LabelledCounter
    associations_rejected: LabelledCounter
    associations_ended: LabelledCounter
    instances_received: LabelledCounter
    received_bytes: LabelledCounter
    instances_refused: LabelledCounter
    fast_path_stores: LabelledCounter
    receive_limits_crossed: LabelledCounter


#: The names of :class:`ListenerCounters`' fields, as forwarded by worker processes.
LISTENER_COUNTERS = frozenset(f.name for f in fields(ListenerCounters))


@dataclass(frozen=True)
class IngestMetrics:
    associations_open: Gauge
    associations_accepted: Counter
    associations_rejected: Counter
    associations_ended: Counter
    instances_received: Counter
    received_bytes: Counter
    instances_refused: Counter
    fast_path_stores: Counter
    receive_limits_crossed: Counter
    instances_stored: Counter
    upload_failures: Counter
    event_publish_latency: Histogram
    events_published: Counter
    outbox_events: Gauge
    events_set_aside: Gauge
    associations_failed: Gauge
    studies_waiting: Gauge
    spool_used_ratio: Gauge
    spool_watermark_ratio: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry) -> IngestMetrics:
        return cls(
            associations_open=Gauge(
                f"{PREFIX}_associations_open",
                "Admitted DICOM associations currently open.",
                registry=registry,
            ),
            associations_accepted=Counter(
                f"{PREFIX}_associations_accepted",
                "Associations admitted, by called AE title.",
                ["called_ae"],
                registry=registry,
            ),
            associations_rejected=Counter(
                f"{PREFIX}_associations_rejected",
                "Associations rejected with an A-ASSOCIATE-RJ, by reason.",
                ["reason"],
                registry=registry,
            ),
            associations_ended=Counter(
                f"{PREFIX}_associations_ended",
                "Admitted associations that ended, by called AE title and outcome "
                "(released or aborted).",
                ["called_ae", "outcome"],
                registry=registry,
            ),
            instances_received=Counter(
                f"{PREFIX}_instances_received",
                "Instances received and made durable (C-STORE answered with success), "
                "by called AE title.",
                ["called_ae"],
                registry=registry,
            ),
            received_bytes=Counter(
                f"{PREFIX}_received_bytes",
                "Data set bytes of the instances counted in instances_received.",
                ["called_ae"],
                registry=registry,
            ),
            instances_refused=Counter(
                f"{PREFIX}_instances_refused",
                "C-STOREs answered with a failure status, by status (hex).",
                ["status"],
                registry=registry,
            ),
            fast_path_stores=Counter(
                f"{PREFIX}_fast_path_stores",
                "C-STOREs read on the fast path rather than through pynetdicom's DIMSE "
                "decoding (docs/performance.md), whatever their status, by called AE title.",
                ["called_ae"],
                registry=registry,
            ),
            receive_limits_crossed=Counter(
                f"{PREFIX}_receive_limits_crossed",
                "Instances refused with 0xA700 while they arrived, or associations aborted for "
                "a trickle, by the limit crossed (ingest/receive_limits.py).",
                ["limit"],
                registry=registry,
            ),
            instances_stored=Counter(
                f"{PREFIX}_instances_stored",
                "Instances uploaded to object storage.",
                registry=registry,
            ),
            upload_failures=Counter(
                f"{PREFIX}_upload_failures",
                "Upload attempts of an association that failed and are retried.",
                registry=registry,
            ),
            event_publish_latency=Histogram(
                f"{PREFIX}_event_publish_latency_seconds",
                "From the release of an association to its event confirmed by the event bus.",
                buckets=_PUBLISH_BUCKETS,
                registry=registry,
            ),
            events_published=Counter(
                f"{PREFIX}_events_published",
                "Association events confirmed by the event bus.",
                registry=registry,
            ),
            outbox_events=Gauge(
                f"{PREFIX}_outbox_events",
                "Association events waiting in the outbox to be published.",
                registry=registry,
            ),
            events_set_aside=Gauge(
                f"{PREFIX}_events_set_aside",
                "Association events of the outbox the event bus refused again and again, set "
                "aside: offered again hourly and at each start, not blocking the others.",
                registry=registry,
            ),
            associations_failed=Gauge(
                f"{PREFIX}_associations_failed",
                "Associations set aside because storing them kept failing for a reason other "
                "than an outage; their files wait in the spool (dicom-gateway associations).",
                registry=registry,
            ),
            studies_waiting=Gauge(
                f"{PREFIX}_studies_waiting",
                "Studies of AE titles with study_stable_seconds waiting for their quiet time "
                "(or for an association of theirs still arriving) before their stable event.",
                registry=registry,
            ),
            spool_used_ratio=Gauge(
                f"{PREFIX}_spool_used_ratio",
                "Used fraction of the filesystem that holds the spool.",
                registry=registry,
            ),
            spool_watermark_ratio=Gauge(
                f"{PREFIX}_spool_watermark_ratio",
                "The configured spool watermark as a fraction; above it associations are "
                "rejected as temporary congestion.",
                registry=registry,
            ),
        )

    def listener_counters(self) -> ListenerCounters:
        return ListenerCounters(
            associations_accepted=self.associations_accepted,
            associations_rejected=self.associations_rejected,
            associations_ended=self.associations_ended,
            instances_received=self.instances_received,
            received_bytes=self.received_bytes,
            instances_refused=self.instances_refused,
            fast_path_stores=self.fast_path_stores,
            receive_limits_crossed=self.receive_limits_crossed,
        )

    def observe_with(
        self,
        *,
        open_associations: Callable[[], float],
        outbox_depth: Callable[[], float],
        set_aside_events: Callable[[], float],
        failed_associations: Callable[[], float],
        studies_waiting: Callable[[], float],
        spool_used: Callable[[], float],
        watermark: float,
    ) -> None:
        """Gauges read at scrape time from the running service."""
        self.associations_open.set_function(open_associations)
        self.outbox_events.set_function(outbox_depth)
        self.events_set_aside.set_function(set_aside_events)
        self.associations_failed.set_function(failed_associations)
        self.studies_waiting.set_function(studies_waiting)
        self.spool_used_ratio.set_function(spool_used)
        self.spool_watermark_ratio.set(watermark)


@dataclass(frozen=True)
class ExportMetrics:
    requests: Counter
    instances: Counter
    association_duration: Histogram
    in_flight: Gauge

    @classmethod
    def register(cls, registry: CollectorRegistry) -> ExportMetrics:
        return cls(
            requests=Counter(
                f"{PREFIX}_export_requests",
                "Export requests finished, by status (succeeded, partially_failed, failed, "
                "or invalid for a request dead-lettered without being carried out).",
                ["status"],
                registry=registry,
            ),
            instances=Counter(
                f"{PREFIX}_export_instances",
                "Instances of finished export requests, by destination and outcome "
                "(sent, failed, skipped).",
                ["destination", "outcome"],
                registry=registry,
            ),
            association_duration=Histogram(
                f"{PREFIX}_export_association_seconds",
                "Duration of each SCU association, by destination.",
                ["destination"],
                buckets=_ASSOCIATION_BUCKETS,
                registry=registry,
            ),
            in_flight=Gauge(
                f"{PREFIX}_export_requests_in_flight",
                "Export requests being carried out.",
                registry=registry,
            ),
        )


_SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry can expose, whether or not it has been observed yet."""
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in _SAMPLE_SUFFIXES[family.type]
    }
