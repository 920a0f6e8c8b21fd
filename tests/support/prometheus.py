"""Reading Prometheus text output (``/metrics``) in tests."""

from __future__ import annotations

from collections.abc import Mapping


def metric(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The value of one series in Prometheus text output (0 when it is not there yet)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in (labels or {}).items())
    series = f"{name}{{{wanted}}}" if wanted else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
