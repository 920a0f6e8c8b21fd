"""Logging set-up: one format for the whole process, quiet libraries.

``log_format = "json"`` (``GATEWAY_LOG_FORMAT=json``) writes one JSON object per line, for log
shippers. A log call can attach machine-readable fields with ``extra=fields(...)``: the JSON
format puts them at the top level of the line, the text format leaves them out (its message
says the same in words).

pynetdicom logs PDU and data set details at INFO and DEBUG, which can include patient data;
it is limited to warnings so that no patient-identifying data reaches the logs by default.
Our own log lines carry AE titles, addresses, UIDs, counts and timings, never the contents of
a data set.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

_LIBRARY_LEVELS = {
    "pynetdicom": logging.WARNING,
    "aio_pika": logging.WARNING,
    "aiormq": logging.WARNING,
}
_FIELDS = "gateway_fields"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: structured fields for the JSON format."""
    return {_FIELDS: values}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, _FIELDS, None)
        if isinstance(extra, dict):
            document.update({k: v for k, v in extra.items() if k not in document})
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def configure_logging(level: str, log_format: Literal["text", "json"] = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, library_level in _LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(max(library_level, logging.getLevelName(level)))
