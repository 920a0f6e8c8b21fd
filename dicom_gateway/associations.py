"""``dicom-gateway associations``: the operator's view of what ingest holds in its journal
(:mod:`ingest.association_commands`), on a running or a stopped gateway.

It opens the journal of ``ingest.spool_dir`` and never creates one: a spool ingest has never
used is an error, not an empty list.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from gateway.errors import ConfigError, UsageError
from gateway.settings import GatewaySettings

ACTIONS = ("list", "show", "retry", "drop", "reannounce")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=ACTIONS,
        help="list every association; show, retry (a failed one), drop (a failed or aborted "
        "one, one whose event is set aside, or a set-aside study event) or reannounce "
        "(publish its event again, same id) the association ID",
    )
    parser.add_argument("association_id", nargs="?", metavar="ID", help="an association id")
    parser.add_argument(
        "--yes", action="store_true", help="drop: really delete its spool files and objects"
    )


def run(args: argparse.Namespace, settings: GatewaySettings, write: Callable[[str], None]) -> int:
    # Imported here: the other subcommands have no use for ingest's modules (cli.py).
    from gateway.backends import open_store  # noqa: PLC0415
    from ingest import association_commands as commands  # noqa: PLC0415
    from ingest.journal import Journal  # noqa: PLC0415
    from ingest.spool import Spool  # noqa: PLC0415

    if (args.action == "list") != (args.association_id is None):
        raise UsageError(
            "give an association ID to show, retry, drop or reannounce"
            if args.action != "list"
            else "list takes no association ID"
        )
    if args.action == "drop" and not args.yes:
        raise UsageError("drop deletes the association's files and objects: add --yes")
    spool = Spool(settings.ingest.spool_dir)
    if not spool.journal_path.exists():
        raise ConfigError(f"no journal at {spool.journal_path}: ingest has not run with this spool")
    journal = Journal.open(spool.journal_path)
    try:
        if args.action == "list":
            for line in commands.listing(journal):
                write(line)
        elif args.action == "show":
            write(commands.shown(journal, args.association_id))
        elif args.action == "retry":
            write(commands.retry(journal, args.association_id))
        elif args.action == "reannounce":
            write(commands.reannounce(journal, args.association_id))
        else:
            store = open_store(settings.storage)
            write(commands.drop(journal, spool, store, args.association_id))
    finally:
        journal.close()
    return 0
