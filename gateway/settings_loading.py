"""Building a settings model from its TOML file and the environment, and saying in one line
what is wrong (:func:`load_from`); :mod:`gateway.settings` holds the models.

The environment is read here, and only here: a variable naming a section that does not exist
is an error, as an unknown table in the file is, and one whose JSON does not parse is named.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, SettingsError

from gateway.errors import ConfigError

S = TypeVar("S", bound=BaseSettings)


def load_from(settings_cls: type[S], config_file: Path | None) -> S:
    """Build ``settings_cls`` from ``config_file`` (if any) and the environment.

    Raises :class:`ConfigError` naming every invalid field.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"configuration file {config_file} does not exist")
    unknown = unknown_section_variables(settings_cls, os.environ)
    if unknown:
        raise ConfigError(f"invalid configuration: {'; '.join(unknown)}")
    if config_file is not None:
        settings_cls = type(
            f"{settings_cls.__name__}FromFile",
            (settings_cls,),
            {"model_config": {**settings_cls.model_config, "toml_file": config_file}},
        )
    try:
        return settings_cls()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
    except SettingsError as exc:  # a variable's value pydantic-settings could not parse
        raise ConfigError(f"invalid configuration: {unparsable_variable(exc, os.environ)}") from exc
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"invalid configuration file {config_file}: {exc}") from exc


def unknown_section_variables(
    settings_cls: type[BaseSettings], environ: Mapping[str, str]
) -> list[str]:
    """Variables ``<prefix><SECTION><delimiter>...`` whose section is none of the settings'.

    pydantic-settings reads only the variables of the fields it knows, so a typo in a section's
    name (``GATEWAY_BROKR__URL``) would go unnoticed, where the same typo in the TOML file is an
    error. So it is an error here too, for settings that forbid unknown fields as the gateway's
    do (the pipeline client's ignore the gateway's other sections, in the file and here alike).
    A variable without the delimiter is not checked: ``GATEWAY_CONFIG`` and the tests'
    ``GATEWAY_TEST_*`` share the prefix.
    """
    config = settings_cls.model_config
    prefix = str(config.get("env_prefix") or "").upper()
    delimiter = config.get("env_nested_delimiter")
    if config.get("extra") != "forbid" or not prefix or not delimiter:
        return []
    fields = settings_cls.model_fields
    sections = ", ".join(
        sorted(name for name, field in fields.items() if isinstance(field.default, BaseModel))
    )
    problems = []
    for name in sorted(environ):
        rest = name.upper().removeprefix(prefix)
        if rest == name.upper() or delimiter not in rest:
            continue
        section = rest.split(delimiter, 1)[0].lower()
        if section not in fields:
            problems.append(
                f"environment variable {name}: {section!r} is not a section of the "
                f"configuration ({sections})"
            )
    return problems


def unparsable_variable(exc: SettingsError, environ: Mapping[str, str]) -> str:
    """What pydantic-settings could not parse, naming the variable (its own message names
    only the field, and its source's class)."""
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        names = sorted(name for name, value in environ.items() if value == cause.doc)
        if names:
            return (
                f"environment variable {' or '.join(names)} is not valid JSON ({cause}): "
                """lists and sections are given in JSON, e.g. '[5, 30]' or '[{"name": ...}]'"""
            )
    return str(exc)
