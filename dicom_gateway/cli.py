"""The ``dicom-gateway`` command: one entry point, one subcommand per service.

Each subcommand imports only the service it runs (in :func:`_dispatch`): ``ingest`` has no use
for export's modules, nor ``send`` for either service, and every start-up pays for what it
imports."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal, NoReturn
from urllib.parse import urlsplit, urlunsplit

from dicom_gateway.associations import add_arguments as add_association_arguments
from dicom_gateway.associations import run as run_associations
from gateway.errors import ConfigError, GatewayError, IncompatibleLibrary, UsageError
from gateway.logs import configure_logging
from gateway.settings import GatewaySettings, load_settings

#: Without a terminal, ``send --wait`` reports that it is still waiting this often.
PROGRESS_LINE_SECONDS = 5.0
#: Commands that print their result: their INFO lines (such as "connected to RabbitMQ") say
#: nothing the user asked for, so they log warnings and errors only unless told otherwise.
RESULT_COMMANDS = frozenset({"send", "echo"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def installed_version() -> str:
    try:
        return version("dicom-gateway")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-gateway",
        description="DICOM gateway between imaging devices and AI pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    log_level_help = (
        "default: log_level of the settings (INFO; WARNING for send and echo, which print "
        "their result)"
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, help=log_level_help)
    # Each subcommand takes it too (after its name); SUPPRESS keeps a subcommand that was not
    # given it from overwriting one given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS, help=log_level_help
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def subcommand(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, parents=[common])

    serve = subcommand("serve", "run ingest and export in one process (no configuration needed)")
    ingest = subcommand("ingest", "run the DICOM C-STORE SCP")
    export = subcommand("export", "run the export service (Storage SCU)")
    events = subcommand(
        "events", "print events as CloudEvent JSON lines (local event log, or --follow)"
    )
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument(
        "--type",
        dest="event_type",
        help="only events of this CloudEvent type, e.g. dicomgateway.association.released.v1",
    )
    echo = subcommand("echo", "C-ECHO a configured export destination")
    echo.add_argument("destination", help="name of an [[export.destinations]] entry")
    send = subcommand("send", "publish an export request")
    send.add_argument("--to", required=True, dest="destination", help="destination name")
    send.add_argument("--association", help="export every instance of this association")
    send.add_argument("object_keys", nargs="*", default=[], help="object keys to export")
    send.add_argument(
        "--wait",
        action="store_true",
        help="wait for the completion and print it: a line per destination and per instance "
        "not sent; while waiting, say where the request stands",
    )
    send.add_argument("--timeout", type=float, default=600, help="seconds --wait waits")
    check = subcommand("check-config", "validate the configuration and print it")
    associations = subcommand(
        "associations",
        "list, show, retry, drop or reannounce the associations ingest's journal holds",
    )
    add_association_arguments(associations)
    for command in (serve, ingest, export):
        command.add_argument(
            "--port-file",
            type=Path,
            help='once listening, write the ports as JSON here ({"dicom": 11112, "http": 8080}): '
            'for supervisors and test harnesses, with ingest.port = 0 or http ports "auto"',
        )
    for command in (serve, ingest, export, events, echo, send, check, associations):
        command.add_argument(
            "--config",
            type=Path,
            help="TOML configuration file (default: $GATEWAY_CONFIG, else built-in defaults)",
        )
    return parser


def log_level(command: str, given: LogLevel | None, settings: GatewaySettings) -> LogLevel:
    """The level to log at: ``--log-level``, else a ``log_level`` the settings were given,
    else the default (WARNING for the commands that print their result)."""
    if given is not None:
        return given
    if command in RESULT_COMMANDS and "log_level" not in settings.model_fields_set:
        return "WARNING"
    return settings.log_level


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


class WaitProgress:
    """What ``send --wait`` shows on stderr while it waits: one updating line on a terminal,
    else a line every :data:`PROGRESS_LINE_SECONDS` (logs and CI output stay short)."""

    def __init__(self, export_id: str, destination: str) -> None:
        self._what = f"export {export_id} to {destination}"
        self._tty = sys.stderr.isatty()
        self._last_line = 0.0
        self._open_line = False

    def __call__(self, elapsed: float) -> None:
        text = f"{self._what}: waiting for its completion, {elapsed:.0f} s"
        if self._tty:
            print(f"\r{text}", end="", file=sys.stderr, flush=True)
            self._open_line = True
        elif elapsed - self._last_line >= PROGRESS_LINE_SECONDS:
            self._last_line = elapsed
            print(text, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """Say where the request stands, on a line of its own."""
        self.finish()
        print(f"{self._what}: {text}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        """End the updating line, so that what follows starts on a line of its own."""
        if self._open_line:
            print(file=sys.stderr, flush=True)
            self._open_line = False


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = dict(os.environ) if environ is None else environ
    try:
        settings = load_settings(_config_path(args.config, env))
    except ConfigError as exc:
        print(f"dicom-gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        log_level(args.command, getattr(args, "log_level", None), settings), settings.log_format
    )
    log = logging.getLogger("dicom-gateway")
    if args.command == "check-config":
        print(redacted_json(settings))
        return 0
    try:
        return _dispatch(args, settings)
    except UsageError as exc:  # said as argparse says a wrong argument: no log line around it
        print(f"dicom-gateway {args.command}: {exc}", file=sys.stderr)
        return 2
    except IncompatibleLibrary as exc:  # as an invalid configuration: the message says what to do
        log.error("%s", exc)
        return 2
    except GatewayError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # Ctrl-C ends the one-shot commands (events --follow, send)
        return 130


def _dispatch(args: argparse.Namespace, settings: GatewaySettings) -> int:
    if args.command == "serve":
        from dicom_gateway.serve import run as run_serve  # noqa: PLC0415 (see the docstring)

        return run_serve(settings, args.port_file)
    if args.command == "ingest":
        from ingest.app import run as run_ingest  # noqa: PLC0415

        return run_ingest(settings, args.port_file)
    if args.command == "export":
        from export.app import run as run_export  # noqa: PLC0415

        return run_export(settings, args.port_file)
    if args.command == "associations":
        return run_associations(args, settings, lambda line: print(line, flush=True))
    if args.command == "events":
        from dicom_gateway.event_printer import print_events  # noqa: PLC0415

        print_events(
            settings,
            follow=args.follow,
            event_type=args.event_type,
            write=lambda line: print(line, flush=True),
        )
        return 0
    from export.commands import (  # noqa: PLC0415
        build_request,
        echo_destination,
        send_request,
        succeeded,
        summary,
    )

    if args.command == "echo":
        problem = echo_destination(settings, args.destination)
        print(f"C-ECHO {args.destination}: {problem or 'success'}")
        return 0 if problem is None else 1
    request = build_request(
        settings,
        args.destination,
        args.association,
        tuple(args.object_keys),
        f"export.completed.cli.{uuid.uuid4().hex}" if args.wait else None,
    )
    progress = WaitProgress(request.export_id, args.destination)
    try:
        completed = asyncio.run(
            send_request(settings, request, args.timeout if args.wait else None, progress)
        )
    finally:
        progress.finish()
    if completed is None:
        print(f"export {request.export_id} requested")
        return 0
    print(summary(completed))
    return 0 if succeeded(completed) else 1


def run() -> NoReturn:
    """The process's entry point (the ``dicom-gateway`` script and ``python -m dicom_gateway``):
    :func:`main`, then exit with its status."""
    status = main()
    # The process ends here. Without this the interpreter's last garbage collections walk every
    # object the services loaded, which makes each exit take a noticeable fraction of a second;
    # resources are closed by then, so nothing needs those collections. (Not in main(): tests
    # call it in their own process, which goes on.)
    gc.freeze()
    sys.exit(status)
