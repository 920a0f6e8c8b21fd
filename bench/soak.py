"""``python -m bench.soak``: hours of traffic in minutes' worth of code; memory over time.

Runs ``dicom-gateway ingest`` on the embedded defaults (no services needed) and keeps
``--senders`` ``storescu`` processes sending ``--instances`` small instances each, one
association after another, for ``--minutes``. Every ``--interval`` seconds it prints the
associations and instances so far, the events published and the RSS of the ingest processes.
It exits 1 if any association failed, if an event is missing at the end, or if RSS at the end
is more than ``--growth`` times what it was after the first interval (a leak). Not part of the
test suite: it is meant to run for 30 minutes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.backends import Embedded
from bench.datasets import load_or_generate, small_instances
from bench.ingest_runs import EVENTS_BINDING, STARTUP_SECONDS, ingest_config
from bench.processes import Dcmtk, calling_ae_titles
from gateway_client.testing import GatewayProcess
from tests.support.dcmtk import dcmtk_environment
from tests.support.proc import descendants

_KIB = 1024


@dataclass
class Traffic:
    """What the senders did; shared between their threads."""

    associations: int = 0
    instances: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _rss_mib(pid: int) -> float:
    """Current RSS of ``pid`` and its descendants (the worker processes), in MiB."""
    total = 0
    for process in (pid, *descendants([pid])):
        try:
            status = Path(f"/proc/{process}/status").read_text()
        except OSError:
            continue  # it has just gone
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * _KIB
    return total / 2**20


def _send_until(command: list[str], count: int, deadline: float, traffic: Traffic) -> None:
    """Run ``command`` (one storescu association of ``count`` instances) until ``deadline``."""
    title = command[command.index("-aet") + 1]
    while time.monotonic() < deadline:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=dcmtk_environment(), check=False
        )
        with traffic.lock:
            if completed.returncode == 0:
                traffic.associations += 1
                traffic.instances += count
            else:
                traffic.failures.append(f"{title}: {completed.stderr.strip()[-300:]}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--instances", type=int, default=20, help="per association")
    parser.add_argument("--workers", type=int, default=1, help="ingest.workers")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between lines")
    parser.add_argument("--growth", type=float, default=1.5, help="largest RSS end/start ratio")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dicom-gateway-bench"
    )
    return parser


def main(arguments: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(arguments)
    dcmtk = Dcmtk.find()
    dataset, _ = load_or_generate(small_instances(args.instances), args.workdir / "data")
    directory = args.workdir / "soak" / time.strftime("%Y%m%d-%H%M%S")
    backend = Embedded()
    backend.prepare(directory, "soak")
    config = ingest_config(backend, directory, "soak", args.senders, args.workers)
    traffic = Traffic()
    with (
        backend.bus(directory, EVENTS_BINDING) as bus,
        GatewayProcess(config, directory, startup_timeout=STARTUP_SECONDS) as ingest,
    ):
        assert ingest.pid is not None  # running
        port = ingest.port
        started = time.monotonic()
        deadline = started + args.minutes * 60
        files = [str(path) for path in dataset.paths]
        senders = [
            threading.Thread(
                target=_send_until,
                args=(
                    [
                        *(dcmtk.tool("storescu"), "-R", "-aet", title, "-aec", "GATEWAY"),
                        *("127.0.0.1", str(port), *files),
                    ],
                    len(files),
                    deadline,
                    traffic,
                ),
                daemon=True,
            )
            for title in calling_ae_titles(args.senders)
        ]
        for sender in senders:
            sender.start()
        print("| minute | associations | instances | events | RSS MiB | failures |")
        print("|--:|--:|--:|--:|--:|--:|")
        first_rss: float | None = None
        rss = 0.0
        while any(sender.is_alive() for sender in senders):
            time.sleep(min(args.interval, max(0.0, deadline - time.monotonic()) + 1))
            rss = _rss_mib(ingest.pid)
            first_rss = rss if first_rss is None else first_rss
            with traffic.lock:
                line = (traffic.associations, traffic.instances, len(traffic.failures))
            minute = (time.monotonic() - started) / 60
            print(
                f"| {minute:.1f} | {line[0]:,} | {line[1]:,} | {bus.count()} "
                f"| {rss:.0f} | {line[2]} |",
                flush=True,
            )
        try:
            bus.wait_for_count(traffic.associations, 300, "every association's event")
            missing = 0
        except TimeoutError:
            missing = traffic.associations - bus.count()
    problems = [f"{len(traffic.failures)} associations failed"] if traffic.failures else []
    problems += [f"{missing} events missing"] if missing else []
    if first_rss and rss > args.growth * first_rss:
        problems.append(f"RSS grew from {first_rss:.0f} to {rss:.0f} MiB")
    print(
        f"\n{traffic.associations:,} associations, {traffic.instances:,} instances in "
        f"{args.minutes:g} min with {args.senders} senders and {args.workers} worker(s); "
        + ("; ".join(problems) if problems else "nothing lost, memory stable")
    )
    for failure in traffic.failures[:5]:
        print(f"  {failure}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
