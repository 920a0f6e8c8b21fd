"""Logging set-up: one format for the whole process, quiet libraries.

``log_format = "json"`` (``GATEWAY_LOG_FORMAT=json``) writes one JSON object per line, for log
shippers. A log call can attach machine-readable fields with ``extra=fields(...)``: the JSON
format puts them at the top level of the line, the text format leaves them out (its message
says the same in words).

pynetdicom logs PDU and data set details at INFO and DEBUG, which can include patient data;
it is limited to warnings so that no patient-identifying data reaches the logs by default.
Our own log lines carry AE titles, addresses, UIDs, counts and timings, never the contents of
a data set. Several of those come from the peer (an AE title, a UID), so the text format writes
every control character of a message escaped (``\\n``, ``\\x1b``): a peer cannot forge a log
line or steer a terminal, whichever logger (ours or pynetdicom's) wrote the message. The JSON
format escapes them anyway.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.log_noise import quiet_library_noise

_LIBRARY_LEVELS = {
    "pynetdicom": logging.WARNING,
    "aio_pika": logging.WARNING,
    "aiormq": logging.WARNING,
}
_FIELDS = "gateway_fields"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: C0 and C1 control characters and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: structured fields for the JSON format."""
    return {_FIELDS: values}


def escape_controls(text: str) -> str:
    """``text`` with each control character written as its escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode(), text)


class TextFormatter(logging.Formatter):
    """The text format, one line per message whatever the message holds (a traceback, ours,
    follows on lines of its own)."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = escape_controls(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def formatException(self, ei: Any) -> str:
        """The traceback, with each exception's own text escaped (it may quote the peer)."""
        text = super().formatException(ei)
        exception: BaseException | None = ei[1]
        seen: set[int] = set()
        while exception is not None and id(exception) not in seen:
            seen.add(id(exception))
            own = "".join(traceback.format_exception_only(exception)).rstrip("\n")
            text = text.replace(own, escape_controls(own))
            exception = exception.__cause__ or exception.__context__
        return text


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
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, library_level in _LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(max(library_level, logging.getLevelName(level)))
    quiet_library_noise()
