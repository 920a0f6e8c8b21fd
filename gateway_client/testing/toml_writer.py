"""Writing a gateway's configuration (a dict) as TOML; the standard library only reads it."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def to_toml(document: Mapping[str, Any]) -> str:
    """Write ``document`` as TOML: scalars, arrays of scalars, tables and arrays of tables.

    Enough for the gateway's configuration; ``None`` values are left out (TOML has no null).
    """
    lines: list[str] = []
    _write_table(lines, (), document)
    return "\n".join(lines).lstrip("\n") + "\n"


def _write_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    tables: list[tuple[str, Mapping[str, Any]]] = []
    arrays_of_tables: list[tuple[str, Sequence[Mapping[str, Any]]]] = []
    for key, value in table.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif _is_array_of_tables(value):
            arrays_of_tables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, sub_table in tables:
        sub_path = (*path, key)
        lines.extend(["", f"[{'.'.join(_key(k) for k in sub_path)}]"])
        _write_table(lines, sub_path, sub_table)
    for key, items in arrays_of_tables:
        sub_path = (*path, key)
        for item in items:
            lines.extend(["", f"[[{'.'.join(_key(k) for k in sub_path)}]]"])
            _write_table(lines, sub_path, item)


def _is_array_of_tables(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(isinstance(item, Mapping) for item in value)
    )


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str | Path):
        return _string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def _string(text: str) -> str:
    # JSON's string escapes are all valid in TOML basic strings; ensure_ascii=False keeps
    # characters outside the BMP literal, where JSON would write surrogate pairs TOML rejects.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
