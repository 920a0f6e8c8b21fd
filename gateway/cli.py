"""The ``dicom-gateway`` command: one entry point, one subcommand per service."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.errors import ConfigError, GatewayError
from gateway.logs import configure_logging
from gateway.settings import GatewaySettings, load_settings
from ingest.app import run as run_ingest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-gateway",
        description="DICOM gateway between imaging devices and AI pipelines.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ingest = commands.add_parser("ingest", help="run the DICOM C-STORE SCP")
    ingest.add_argument(
        "--config",
        type=Path,
        help="TOML configuration file (default: $GATEWAY_CONFIG, else built-in defaults)",
    )
    commands.add_parser(
        "check-config", help="validate the configuration and print it"
    ).add_argument("--config", type=Path)
    return parser


def _config_path(given: Path | None, environ: dict[str, str]) -> Path | None:
    if given is not None:
        return given
    from_env = environ.get("GATEWAY_CONFIG")
    return Path(from_env) if from_env else None


def redacted_json(settings: GatewaySettings) -> str:
    """The effective settings as JSON, without the secrets in them."""
    document = settings.model_dump(mode="json")
    document["storage"]["secret_key"] = "***" if settings.storage.secret_key else ""
    url = urlsplit(settings.broker.url)
    if url.password:
        netloc = f"{url.username}:***@{url.hostname}" + (f":{url.port}" if url.port else "")
        document["broker"]["url"] = urlunsplit(url._replace(netloc=netloc))
    return json.dumps(document, indent=2)


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    log = logging.getLogger("dicom-gateway")
    env = dict(os.environ) if environ is None else environ
    try:
        settings = load_settings(_config_path(args.config, env))
    except ConfigError as exc:
        print(f"dicom-gateway: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(redacted_json(settings))
        return 0
    try:
        return run_ingest(settings)
    except GatewayError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
