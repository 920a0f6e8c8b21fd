"""Reading the deployment files (``compose/``, the ``Dockerfile``) for the tests that check
them statically: YAML, Compose's variable syntax, ports, mounts, durations, Dockerfile
instructions and the ports table of ``compose/README.md``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
GATEWAY_TOML = COMPOSE_DIR / "gateway.toml"
CONFIG_IN_CONTAINER = "/etc/dicom-gateway/gateway.toml"

VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
DURATION = re.compile(r"^(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def mapping(value: Any) -> dict[str, Any]:
    assert isinstance(value, dict), f"expected a mapping, got {value!r}"
    return value


def strings(value: Any) -> list[str]:
    assert isinstance(value, list), f"expected a list, got {value!r}"
    assert all(isinstance(v, str) for v in value), value
    return value


def read_yaml(path: Path) -> dict[str, Any]:
    return mapping(yaml.safe_load(path.read_text(encoding="utf-8")))


def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` with the defaults, as on a host without an .env file."""

    def default(match: re.Match[str]) -> str:
        assert match["default"] is not None, f"${{{match['name']}}} has no default"
        return match["default"]

    return VARIABLE.sub(default, value)


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = mapping(service.get("environment", {}))
    return {name: interpolate(str(value)) for name, value in environment.items()}


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host, container) pairs of the short port syntax ``[ip:]host:container[/proto]``."""
    pairs = []
    for entry in strings(service.get("ports", [])):
        parts = entry.split("/")[0].split(":")
        assert len(parts) >= 2, f"{entry!r}: give the host port explicitly"
        pairs.append((int(parts[-2]), int(parts[-1])))
    return pairs


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of the short volume syntax ``source:target[:mode]``."""
    mounts = []
    for entry in strings(service.get("volumes", [])):
        source, target, *_ = entry.split(":")
        mounts.append((source, target))
    return mounts


def mount_target(service: dict[str, Any], source: str) -> str:
    targets = [t for s, t in mounts(service) if s == source]
    assert len(targets) == 1, f"{source} is mounted {len(targets)} times"
    return targets[0]


def healthcheck_command(service: dict[str, Any]) -> str:
    return " ".join(strings(mapping(service["healthcheck"])["test"]))


def seconds(duration: str) -> int:
    match = DURATION.match(duration)
    assert duration, "empty duration"
    assert match is not None, f"unsupported duration {duration!r}"
    return int(match["m"] or 0) * 60 + int(match["s"] or 0)


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def dockerfile_args(instruction: str) -> list[str]:
    return [arguments for keyword, arguments in dockerfile() if keyword == instruction]


def readme_ports() -> set[tuple[str, int]]:
    """The (service, port) rows of the ports table under "## What runs where"."""
    text = (COMPOSE_DIR / "README.md").read_text(encoding="utf-8")
    section = text.split("## What runs where", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and cells[1].isdigit():
            rows.add((cells[0], int(cells[1])))
    assert rows, "no ports table found in compose/README.md"
    return rows


def image_is_pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return (
        bool(name)
        and "/" not in tag
        and tag not in {"latest", "stable", "main"}
        and re.search(r"\d", tag) is not None
    )
