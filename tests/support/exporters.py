"""An export service's exporter, in the test's own process, sending to one destination."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from export.exporter import Exporter
from export.scu import ScuIdentity
from gateway.metrics import ExportMetrics
from gateway.objectstore import ObjectStore
from gateway.settings import DestinationSettings, ExportSettings, NetdicomMode


def exporter_to(
    name: str,
    ae_title: str,
    port: int,
    store: ObjectStore,
    state_dir: Path,
    *,
    mode: NetdicomMode = "prompt",
) -> Exporter:
    """An exporter of ``store``'s objects to the destination ``name`` (``ae_title`` on this
    machine's ``port``), without retries."""
    settings = ExportSettings(
        state_dir=state_dir,
        retries=0,
        destinations=(
            DestinationSettings(name=name, ae_title=ae_title, host="127.0.0.1", port=port),
        ),
    )
    return Exporter.create(
        settings,
        ScuIdentity("GWTEST-SCU", "1.2.826.0.1.3680043.9999.1", "GWTEST", mode),
        store,
        ExportMetrics.register(CollectorRegistry()),
    )
