"""Generated malformed export requests: CloudEvents with missing or wrong attributes, wrong
content types, binary and structured mode mixed up, data that is not JSON or not the request's
shape, wrong types, over-long and non-ASCII values, object keys with path characters. Each is
dead-lettered; a request the contract calls well-formed but that cannot be done (an unknown
destination, nothing stored to send) gets a failed completion instead. The consumer goes on."""

from __future__ import annotations

import collections
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from contracts.cloudevent import CONTENT_TYPE_STRUCTURED
from contracts.export import (
    EXPORT_REQUESTED_TYPE,
    ExportRequested,
    ExportStatus,
    InstanceOutcome,
)
from contracts.keys import OBJECT_KEY_SUFFIX
from tests.integration.conftest import RABBITMQ_S3, Ingest
from tests.integration.export_harness import (
    Export,
    completed,
    destination,
    export_harness,
    new_export_id,
)
from tests.support.dcmtk import Storescp
from tests.support.factories import ct_series
from tests.support.settled import stop_export_with_nothing_left

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


@st.composite
def wrong_attribute(draw: st.DrawFn, fresh: Fresh) -> Hostile:
    """A CloudEvents attribute missing, or with a value it may not have."""
    name = draw(st.sampled_from(ATTRIBUTES))
    values: dict[str, st.SearchStrategy[object]] = {
        "specversion": st.text(max_size=8).filter(lambda v: v != "1.0") | NOT_STRING,
        "id": st.just("") | NOT_STRING,
        "type": st.text(max_size=80).filter(lambda v: v != EXPORT_REQUESTED_TYPE) | NOT_STRING,
        "source": st.just("")
        | NOT_STRING
        | st.tuples(st.text(max_size=20), st.sampled_from(NOT_IN_URIS)).map("".join),
    }
    missing = draw(st.booleans())
    value = None if missing else draw(values[name])
    data = fresh.request()
    if draw(st.booleans()):
        fields = envelope(data, **({} if missing else {name: value}))
        if missing:
            del fields[name]
        return Hostile(
            "CloudEvents attribute", as_json(fields, ascii_only=False), CONTENT_TYPE_STRUCTURED
        )
    headers = ce_headers(**({} if missing else {name: value}))
    if missing:
        del headers[f"ce-{name}"]
    elif not isinstance(value, str):
        # A header of another AMQP type than a string: an integer, a boolean, void, a float,
        # an array, or bytes that are not UTF-8.
        headers[f"ce-{name}"] = draw(
            st.one_of(
                st.integers(-(2**31), 2**31 - 1),
                st.booleans(),
                st.none(),
                st.floats(-1e6, 1e6),
                st.lists(st.integers(0, 9), max_size=2),
                st.just(bytearray(b"\xff\xfe")),
            )
        )
    return Hostile(
        "CloudEvents attribute", as_json(data, ascii_only=True), "application/json", headers
    )


@st.composite
def mode_confusion(draw: st.DrawFn, fresh: Fresh) -> Hostile:
    """Content types and modes that do not fit the body."""
    data = fresh.request()
    structured_body = as_json(envelope(data), ascii_only=True)
    binary_body = as_json(data, ascii_only=True)
    family = "content type or mode"
    case = draw(st.integers(0, 5))
    if case == 0:  # a structured body under another content type, without ce- headers
        content_type = draw(
            st.sampled_from(
                [
                    None,
                    "application/json",
                    "text/plain",
                    "application/cloudevents",
                    "application/cloudevents+xml",
                    "application/cloudevents-batch+json",
                ]
            )
        )
        return Hostile(family, structured_body, content_type)
    if case == 1:  # a structured body sent as binary mode: the envelope is taken for the data
        return Hostile(family, structured_body, "application/json", ce_headers())
    if case == 2:  # a binary body under the structured content type: no attributes in it
        return Hostile(family, binary_body, CONTENT_TYPE_STRUCTURED, ce_headers())
    if case == 3:  # binary mode whose content type is not JSON
        return Hostile(family, binary_body, draw(st.sampled_from(NOT_JSON)), ce_headers())
    if case == 4:  # structured mode whose data is said not to be JSON
        fields = envelope(data, datacontenttype=draw(st.sampled_from(NOT_JSON)))
        return Hostile(family, as_json(fields, ascii_only=True), CONTENT_TYPE_STRUCTURED)
    # both binary bindings' headers at once
    headers = ce_headers() | {"cloudEvents_id": "x", "cloudEvents_specversion": "1.0"}
    return Hostile(family, binary_body, "application/json", headers)


@st.composite
def not_json(draw: st.DrawFn, fresh: Fresh) -> Hostile:
    """A body or data that is not JSON (or JSON text inside a string)."""
    data = fresh.request()
    family = "not JSON"
    text = as_json(envelope(data), ascii_only=True)
    case = draw(st.integers(0, 4))
    if case == 0:  # no prefix of a JSON object's text is JSON
        return Hostile(family, text[: draw(st.integers(0, len(text) - 1))], CONTENT_TYPE_STRUCTURED)
    if case == 1:  # bytes that are not even UTF-8, in either mode
        body = b"\xff" + draw(st.binary(max_size=200))
        return Hostile(
            family,
            body,
            draw(st.sampled_from([CONTENT_TYPE_STRUCTURED, "application/json"])),
            ce_headers(),
        )
    if case == 2:  # binary mode with a body cut short
        body = as_json(data, ascii_only=True)
        return Hostile(
            family, body[: draw(st.integers(0, len(body) - 1))], "application/json", ce_headers()
        )
    if case == 3:  # the request as a JSON string, not an object
        body = as_json(envelope(json.dumps(data)), ascii_only=True)
        return Hostile(family, body, CONTENT_TYPE_STRUCTURED)
    fields = envelope(None)
    del fields["data"]
    fields["data_base64"] = "eyJhIjogMX0="  # base64 of {"a": 1}: binary data, not JSON
    return Hostile(family, as_json(fields, ascii_only=True), CONTENT_TYPE_STRUCTURED)


@st.composite
def wrong_shape(draw: st.DrawFn, fresh: Fresh) -> Hostile:
    """Data that is no export request: not an object, fields missing, extra or both selections."""
    request = fresh.request()
    case = draw(st.integers(0, 4))
    data: object
    if case == 0:
        data = draw(NOT_OBJECT)
    elif case == 1:
        required = draw(st.sampled_from(["export_id", "destinations"]))
        data = {k: v for k, v in request.items() if k != required}
    elif case == 2:
        data = request | {"object_keys": [fresh.missing_key()]}  # both selections
    elif case == 3:
        data = {k: v for k, v in request.items() if k != "association_id"}  # neither
    else:
        extra = draw(
            st.text(min_size=1, max_size=20).filter(lambda k: k not in ExportRequested.model_fields)
        )
        data = request | {extra: draw(st.text(max_size=20))}
    return draw(as_message("wrong shape", data))


@st.composite
def wrong_type(draw: st.DrawFn, fresh: Fresh) -> Hostile:
    """One field with a value of a type it cannot have."""
    request = fresh.request()
    wrong: dict[str, st.SearchStrategy[object]] = {
        "export_id": NOT_STRING,
        "destinations": st.one_of(
            st.text(max_size=10),  # a string is not a list of names
            st.integers(),
            st.dictionaries(st.just(KNOWN), st.integers(0, 9), min_size=1),
            st.lists(NOT_STRING.filter(lambda v: v is not None), min_size=1, max_size=3),
        ),
        "association_id": NOT_STRING.filter(lambda v: v is not None),
        "object_keys": st.one_of(
            st.just(fresh.missing_key()),  # one key, not a list of them
            st.integers(),
            st.lists(NOT_STRING, min_size=1, max_size=2),
        ),
        "reply_routing_key": NOT_STRING.filter(lambda v: v is not None),
        "correlation": NOT_OBJECT.filter(lambda v: v is not None),
    }
    name = draw(st.sampled_from(sorted(wrong)))
    data = request | {name: draw(wrong[name])}
    if name == "object_keys":
        del data["association_id"]
    return draw(as_message("wrong type", data))


@st.composite
def too_long(draw: st.DrawFn, fresh: Fresh) -> Hostile:
    """A value longer than the contract allows (the data is otherwise valid)."""
    request = fresh.request()
    letters = st.sampled_from("abcXYZ019._:-")
    case = draw(st.integers(0, 4))
    if case == 0:
        data = request | {"export_id": draw(st.text(letters, min_size=129, max_size=1000))}
    elif case == 1:
        data = request | {"destinations": [draw(st.text(min_size=65, max_size=1000))]}
    elif case == 2:
        data = request | {
            "association_id": fresh.association_id + draw(st.text(min_size=1, max_size=100))
        }
    elif case == 3:
        long_uid = "1." + "2" * draw(st.integers(63, 5000))
        data = request | {"object_keys": [fresh.missing_key(long_uid)]}
        del data["association_id"]
    else:
        # Over 255 bytes of UTF-8, from 86 characters on.
        key = draw(st.text(st.sampled_from("a.\u00e9\u4e2d"), min_size=256, max_size=1000))
        data = request | {"reply_routing_key": key}
    return draw(as_message("too long", data))


@st.composite
def path_keys(draw: st.DrawFn, fresh: Fresh) -> Hostile:
    """Object keys (or an association id) that would step out of a directory, or hold NUL."""
    key = fresh.missing_key()
    bad = draw(
        st.sampled_from(
            [
                f"../{key}",
                f"/{key}",
                f"/etc/{key}",
                f"{fresh.association_id}/../../../../etc/passwd.dcm",
                key.replace("/", "\\"),
                key.replace("/", "//", 1),
                f"{key}/..",
                key.replace(".dcm", ""),
                f"%2e%2e/{key}",
            ]
        )
        | st.integers(0, len(key)).map(lambda at: key[:at] + "\x00" + key[at:])
    )
    request = fresh.request()
    if draw(st.booleans()):
        data = request | {"association_id": draw(st.sampled_from(["..", "../x", "/", bad]))}
    else:
        data = {k: v for k, v in request.items() if k != "association_id"} | {"object_keys": [bad]}
    return draw(as_message("path characters", data))


@st.composite
def non_ascii(draw: st.DrawFn, fresh: Fresh) -> Hostile:
    """Non-ASCII letters or digits where the contract takes ASCII only."""
    request = fresh.request()
    char = draw(st.sampled_from("\u00e9\u4e2d\u0663\uff11\u2024\U0001f600"))  # incl. digits, a dot
    case = draw(st.integers(0, 2))
    if case == 0:
        at = draw(st.integers(0, len(fresh.export_id)))
        data = request | {"export_id": fresh.export_id[:at] + char + fresh.export_id[at:]}
    elif case == 1:
        data = request | {"association_id": fresh.association_id[:-1] + char}
    else:
        data = {k: v for k, v in request.items() if k != "association_id"}
        data["object_keys"] = [fresh.missing_key(f"1.2.{char}")]
    return draw(as_message("non-ASCII", data))


@st.composite
def cannot_be_done(draw: st.DrawFn, fresh: Fresh) -> Hostile:
    """Well-formed, so answered with a failed completion: unknown destinations (any name of 1
    to 64 characters: NUL, "../", non-ASCII) or nothing stored to send, with a correlation
    of long non-ASCII text that must come back unchanged."""
    unknown = draw(
        st.lists(
            st.text(min_size=1, max_size=64).filter(lambda name: name != KNOWN),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    names = draw(st.sampled_from([unknown, [KNOWN], [KNOWN, *unknown]]))
    errors = {name: "unknown destination" for name in unknown if name in names}
    data: dict[str, Any] = {"export_id": fresh.export_id, "destinations": names}
    if draw(st.booleans()):
        data["association_id"] = fresh.association_id
        errors.setdefault(KNOWN, "no objects are stored")
    else:
        data["object_keys"] = [
            fresh.missing_key(f"1.2.{n}") for n in range(draw(st.integers(1, 3)))
        ]
        errors.setdefault(KNOWN, "object does not exist")
    correlation = draw(
        st.none()
        | st.dictionaries(
            st.text(max_size=20), st.text(max_size=2000) | st.integers(-(2**53), 2**53), max_size=2
        )
    )
    if correlation is not None:
        data["correlation"] = correlation
    outcome = {
        "export_id": fresh.export_id,
        "errors": {name: errors[name] for name in names},
        "correlation": correlation,
    }
    return draw(as_message("cannot be done", data, **outcome))


FAMILIES: tuple[Callable[[Fresh], st.SearchStrategy[Hostile]], ...] = (
    wrong_attribute,
    mode_confusion,
    not_json,
    wrong_shape,
    wrong_type,
    too_long,
    path_keys,
    non_ascii,
    cannot_be_done,
)


@pytest.fixture
def export(ingest: Ingest, tmp_path: Path) -> Iterator[Export]:
    with export_harness(ingest, tmp_path) as harness:
        yield harness


@pytest.mark.backends(RABBITMQ_S3)
def test_generated_malformed_requests_are_dead_lettered_and_the_consumer_goes_on(
    export: Export, inbox: Path, tmp_path: Path
) -> None:
    keys = export.put_instances(ct_series(inbox, 1))
    valid = ExportRequested(export_id=new_export_id(), destinations=(KNOWN,), object_keys=keys)
    dead_total = 0
    completions_seen = 0
    families: collections.Counter[str] = collections.Counter()
    with Storescp(tmp_path / KNOWN) as pacs, export.completions() as completions:
        process = export.start(export.config([destination(KNOWN, pacs.port)]))

        @settings(
            max_examples=25,  # each sends one message of every family: 225 messages
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            # No shrinking: after a failure the queues hold what the failed example left, so
            # a replay would not see what the first run saw. The example is printed whole.
            phases=[Phase.generate],
        )
        @given(data=st.data())
        def each_family_once(data: st.DataObject) -> None:
            nonlocal dead_total, completions_seen
            # All drawn before any is published: hypothesis may abandon an example half-way
            # drawn, and what it had published would then be counted with the next one.
            sent = [
                data.draw(family(Fresh(new_export_id(), str(uuid.uuid4()))), label=family.__name__)
                for family in data.draw(st.permutations(FAMILIES), label="order")
            ]
            for message in sent:
                export.publish_raw(
                    message.body, content_type=message.content_type, headers=message.headers
                )
            dead = [m for m in sent if m.export_id is None]
            if dead:
                taken = export.dead_letters(len(dead), timeout=20)
                assert sorted(m.body for m in taken) == sorted(m.body for m in dead)
            dead_total += len(dead)
            families.update(m.family for m in sent)
            answered = {m.export_id: m for m in sent if m.export_id is not None}
            arrived = completions.wait_for(completions_seen + len(answered), timeout=30)
            results = {done.export_id: done for done in map(completed, arrived[completions_seen:])}
            completions_seen += len(answered)
            assert sorted(results) == sorted(answered)
            for export_id, done in results.items():
                expected = answered[export_id]
                assert done.status is ExportStatus.FAILED
                assert done.correlation == expected.correlation
                assert [d.name for d in done.destinations] == list(expected.errors)
                for result in done.destinations:
                    assert result.status is ExportStatus.FAILED
                    assert result.instances
                    for instance in result.instances:
                        assert instance.status is InstanceOutcome.FAILED
                        assert instance.error is not None
                        assert expected.errors[result.name] in instance.error

        each_family_once()
        # The consumer goes on: a valid request afterwards is carried out.
        export.publish(valid)
        (message,) = completions.wait_for(completions_seen + 1, timeout=30)[-1:]
        assert process.is_running()
        stop_export_with_nothing_left(process, export.ingest, export.queue, completions)
        assert len(pacs.received_files()) == 1

    print(sorted(families.items()))
    done = completed(message)
    assert (done.export_id, done.status) == (valid.export_id, ExportStatus.SUCCEEDED)
    log = process.log_text()
    assert log.count(" dead-lettered: ") == dead_total
    assert "failed unexpectedly" not in log  # every one was refused as invalid, none crashed
    assert "Traceback" not in log
    # Nothing written outside the service's directories, and nothing left in its work area.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["export-1", "export-state", "in", KNOWN]
    )
    assert sorted(p.name for p in (tmp_path / "export-1").iterdir()) == [
        "gateway.log",
        "gateway.toml",
    ]
    assert list((tmp_path / "export-state" / "work").iterdir()) == []
    assert {p.name for p in (tmp_path / "export-state").iterdir()} <= {
        "ledger.sqlite3",
        "ledger.sqlite3-wal",
        "ledger.sqlite3-shm",
        "work",
    }
