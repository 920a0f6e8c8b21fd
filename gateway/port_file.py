"""The ports a service is listening on, written to a file for whoever started it.

``dicom-gateway ingest|export|serve --port-file PATH`` writes, once its listeners are bound, a
JSON object with one entry per listener that exists, e.g. ``{"dicom": 11112, "http": 8080}``.
It matters when a port is chosen by the system (``ingest.port = 0``, ``http.*_port = "auto"``):
a supervisor or a test harness reads the real ports there instead of parsing the log. The file
is written to a temporary name and renamed, so a reader sees either no file or all of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from gateway.errors import GatewayError

#: The keys of the file: the DICOM listener (ingest, serve) and the HTTP endpoints.
DICOM = "dicom"
HTTP = "http"


def listener_ports(*, dicom: int | None = None, http: int | None = None) -> dict[str, int]:
    """The file's content: the listeners that exist (None: there is no such listener)."""
    found = {DICOM: dicom, HTTP: http}
    return {name: port for name, port in found.items() if port is not None}


def write_port_file(path: Path, ports: Mapping[str, int]) -> None:
    """Write ``ports`` to ``path`` atomically; raises :class:`GatewayError` on failure."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(dict(ports)) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise GatewayError(f"cannot write the port file {path}: {exc}") from exc
