"""The pieces of a hostile export request: what a drawn message is (:class:`Hostile`), ids no
earlier message used (:class:`Fresh`), and CloudEvent envelopes and binary-mode headers
written by hand so that any of their fields can be wrong. The families that draw them are
:mod:`tests.support.hostile_requests`."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from contracts.cloudevent import CONTENT_TYPE_STRUCTURED
from contracts.export import (
    EXPORT_REQUESTED_TYPE,
)
from contracts.keys import OBJECT_KEY_SUFFIX

#: The one destination the export service knows.
KNOWN = "pacs"
SOURCE = "dicom-gateway://tests/hostile"
ATTRIBUTES = ("specversion", "id", "source", "type")
#: Characters no URI reference may hold (RFC 3986 section 2), one of which spoils a source.
NOT_IN_URIS = ' "<>\\^`{|}\x00\x7f\n\u00e9\u4e2d'
#: Content types of data that is not JSON.
NOT_JSON = ("text/plain", "application/xml", "application/octet-stream", "image/png")
#: Any JSON value but a string, and any but an object.
NOT_STRING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(0, 9), max_size=2),
    st.dictionaries(st.sampled_from("ab"), st.integers(0, 9), max_size=1),
)
NOT_OBJECT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.text(max_size=20),
    st.lists(st.integers(0, 9), max_size=2),
)


@dataclass(frozen=True)
class Hostile:
    """One generated message, and what the export service must do with it."""

    family: str
    body: bytes
    content_type: str | None
    headers: dict[str, Any] = field(default_factory=dict)
    #: None: dead-lettered. Else the failed completion it gets: its export id, and for each
    #: destination the words its instances' errors contain.
    export_id: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    correlation: dict[str, Any] | None = None


@dataclass(frozen=True)
class Fresh:
    """Ids no earlier message used: each failed completion is a new export."""

    export_id: str
    association_id: str

    def request(self) -> dict[str, Any]:
        """A valid request's data (for an association with nothing stored)."""
        return {
            "export_id": self.export_id,
            "destinations": [KNOWN],
            "association_id": self.association_id,
        }

    def missing_key(self, sop: str = "1.2.3") -> str:
        """An object key under which nothing is stored, well-formed if ``sop`` is a valid UID
        (written out, not built with object_key, which refuses invalid ones)."""
        return f"{self.association_id}/1.2.1/1.2.2/{sop}{OBJECT_KEY_SUFFIX}"


def envelope(data: object, **attributes: object) -> dict[str, Any]:
    """The fields of a structured-mode export request, hand-written so that they can be wrong."""
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": SOURCE,
        "type": EXPORT_REQUESTED_TYPE,
        "datacontenttype": "application/json",
        **attributes,
        "data": data,
    }


def ce_headers(**attributes: object) -> dict[str, Any]:
    """RabbitMQ binary-mode attribute headers (``ce-`` prefixed)."""
    values: dict[str, object] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": SOURCE,
        "type": EXPORT_REQUESTED_TYPE,
        **attributes,
    }
    return {f"ce-{name}": value for name, value in values.items()}


def as_json(value: object, *, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode()


@st.composite
def as_message(draw: st.DrawFn, /, family: str, data: object, **outcome: Any) -> Hostile:
    """``data`` as a well-framed CloudEvent, in structured or binary mode."""
    ascii_only = draw(st.booleans())
    if draw(st.booleans()):
        body = as_json(envelope(data), ascii_only=ascii_only)
        return Hostile(family, body, CONTENT_TYPE_STRUCTURED, **outcome)
    body = as_json(data, ascii_only=ascii_only)
    return Hostile(family, body, "application/json", ce_headers(), **outcome)
