"""Generated malformed export requests, in families (hypothesis strategies): CloudEvents with
missing or wrong attributes, wrong content types, binary and structured mode mixed up, data that
is not JSON or not the request's shape, wrong types, over-long and non-ASCII values, object keys
with path characters, and well-formed requests that cannot be done. Each drawn message says
what must come of it: a dead letter, or a failed completion with the errors it names."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from contracts.cloudevent import CONTENT_TYPE_STRUCTURED
from contracts.export import (
    EXPORT_REQUESTED_TYPE,
    ExportRequested,
)
from tests.support.hostile_messages import (
    ATTRIBUTES,
    KNOWN,
    NOT_IN_URIS,
    NOT_JSON,
    NOT_OBJECT,
    NOT_STRING,
    Fresh,
    Hostile,
    as_json,
    as_message,
    ce_headers,
    envelope,
)


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
