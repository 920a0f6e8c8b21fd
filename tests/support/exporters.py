"""An export service's exporter, in the test's own process, sending to one dcmtk storescp."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from export.exporter import Exporter
from export.scu import ScuIdentity
from gateway.metrics import ExportMetrics
from gateway.objectstore import ObjectStore
from gateway.settings import DestinationSettings, ExportSettings, NetdicomMode
from tests.support.storescp import Storescp


def exporter_to(
    pacs: Storescp, store: ObjectStore, state_dir: Path, mode: NetdicomMode = "prompt"
) -> Exporter:
    """An exporter of ``store``'s objects to ``pacs`` (named "pacs"), without retries."""
    settings = ExportSettings(
        state_dir=state_dir,
        retries=0,
        destinations=(
            DestinationSettings(
                name="pacs", ae_title=pacs.ae_title, host="127.0.0.1", port=pacs.port
            ),
        ),
    )
    return Exporter.create(
        settings,
        ScuIdentity("GWTEST-SCU", "1.2.826.0.1.3680043.9999.1", "GWTEST", mode),
        store,
        ExportMetrics.register(CollectorRegistry()),
    )
