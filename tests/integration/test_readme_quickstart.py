"""The README's quickstart commands, taken from README.md itself and run as written, in a fresh
virtual environment, from a fresh copy of the repository: README and test cannot drift.

What is substituted, and why:

- **Ports.** The README uses the fixed ports 11112 (DICOM), 11113 (the example ``storescp``)
  and 8080/8081 (HTTP). On a test machine other tests run beside this one, so free ports are
  chosen: ``dicom-gateway serve`` gets them from ``GATEWAY_...`` environment variables (its
  command line stays as written), and the two numbers in the ``storescu`` and ``storescp``
  lines are replaced by them. No other setting is given.
- **ASSOCIATION_ID**, a placeholder, is the id ``dicom-gateway events`` printed; ``study/``
  holds a CT series the factories made.
- **The fresh venv.** ``python -m venv`` with a ``.pth`` file that puts this environment's
  site-packages after the venv's own, so that ``pip install .`` finds the dependencies
  installed (no download of the gateway's dependencies, which would not fit in the time; the
  build backend, setuptools, is fetched as pip always does). ``pip install .`` itself runs as
  written and installs the gateway and its ``dicom-gateway`` script into the new venv.
  ``PATH`` is the new venv's ``bin`` and the system's, not this environment's ``bin``. One
  consequence: pynetdicom's own ``storescp`` script, which a venv that installed pynetdicom
  itself has and which shadows dcmtk's (the README says so under the commands), is not in this
  venv, so ``storescp`` here is dcmtk's.
- **The disk.** The zero-configuration spool refuses associations on a disk fuller than 75 %
  or with less than 5 GiB free. The test does not override that: on such a machine it checks
  what the README promises instead (one WARNING line naming the settings, the association
  refused as temporary congestion) and skips the rest, saying why.

The production commands after the quickstart (``ingest``/``export --config gateway.toml``)
need RabbitMQ and MinIO at the addresses and credentials of ``gateway.toml``; the test checks
that file with ``check-config`` instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import IngestSettings
from gateway_client.testing import free_port, http_get, wait_until
from ingest.policy import SpoolUsage, spool_has_room
from tests.support.factories import ct_series
from tests.support.part10_files import read_received

ROOT = Path(__file__).resolve().parents[2]
#: Fixed in the README, replaced by free ports (module docstring).
README_DICOM_PORT, README_STORESCP_PORT = "11112", "11113"
_SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def quickstart_blocks(readme: str) -> list[str]:
    """The ``sh`` code blocks of the README's "Quickstart" section, in order."""
    section = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    return _SH_BLOCK.findall(section)


def _fresh_clone(target: Path) -> Path:
    """The repository's files as a clone would have them (tracked, and new ones not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())
    return target


def _shell_env(venv: Path, ports: dict[str, int]) -> dict[str, str]:
    """An activated fresh venv: its ``bin`` first, then the system's (not this env's)."""
    ours = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != ours]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "VIRTUAL_ENV"))}
    return env | {
        "PATH": os.pathsep.join([str(venv / "bin"), *path]),
        "VIRTUAL_ENV": str(venv),
        "GATEWAY_INGEST__PORT": str(ports["dicom"]),
        "GATEWAY_HTTP__INGEST_PORT": str(ports["http"]),
        "GATEWAY_HTTP__EXPORT_PORT": str(ports["export_http"]),
        "GATEWAY_EXPORT__DESTINATIONS": json.dumps(
            [
                {
                    "name": "example",
                    "ae_title": "STORESCP",
                    "host": "127.0.0.1",
                    "port": ports["storescp"],
                }
            ]
        ),
    }


def _with_ports(command: str, ports: dict[str, int]) -> str:
    return command.replace(f" {README_DICOM_PORT} ", f" {ports['dicom']} ").replace(
        f" {README_STORESCP_PORT} ", f" {ports['storescp']} "
    )


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    (site_packages,) = (venv / "lib").glob("python3*/site-packages")
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site_packages / "ci-environment.pth").write_text(ours + "\n")
    return venv


@pytest.fixture
def serving(tmp_path: Path, venv: Path) -> Iterator[tuple[Path, dict[str, str], Path]]:
    """The first block, ``pip install . && dicom-gateway serve``, running in a fresh clone."""
    blocks = quickstart_blocks((ROOT / "README.md").read_text())
    assert blocks[0].strip() == "pip install . && dicom-gateway serve"
    clone = _fresh_clone(tmp_path / "clone")
    ports = {n: free_port() for n in ("dicom", "storescp", "http", "export_http")}
    env = _shell_env(venv, ports)
    output = tmp_path / "serve.out"
    with output.open("wb") as out:
        serve = subprocess.Popen(
            ["bash", "-c", blocks[0]],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Ready once it says what it listens on (printed after its listeners are up); the
        # spool's readiness is not waited for: on a full disk it never comes (the test).
        wait_until(
            lambda: serve.poll() is not None or "try it: storescu" in output.read_text(),
            60,
            "pip install . && dicom-gateway serve says what it listens on",
        )
        assert _answers(ports["http"]), output.read_text()
        assert serve.poll() is None, output.read_text()
        yield clone, env, output
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(30)
    assert "Traceback" not in output.read_text()


def _answers(port: int) -> bool:
    try:
        return http_get("127.0.0.1", port, "/healthz", timeout=2)[0] == 200
    except OSError:
        return False


def test_the_readme_quickstart_runs_as_written(
    serving: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> None:
    clone, env, output = serving
    ports = {"dicom": int(env["GATEWAY_INGEST__PORT"])}
    ports["storescp"] = json.loads(env["GATEWAY_EXPORT__DESTINATIONS"])[0]["port"]
    blocks = quickstart_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 4, blocks  # serve; send and look; export; production
    installed = clone.parent / "venv" / "bin" / "dicom-gateway"
    assert installed.exists()  # pip install . put the command into the fresh venv

    def run(block: str) -> subprocess.CompletedProcess[str]:
        """``block`` in bash; what it started in the background ("&") is ended afterwards."""
        log = tmp_path / "block.out"
        with log.open("w") as out, (tmp_path / "block.err").open("w") as err:
            shell = subprocess.Popen(
                ["bash", "-c", _with_ports(block, ports)],
                cwd=clone,
                env=env,
                stdout=out,
                stderr=err,
                text=True,
                start_new_session=True,
            )
            try:
                returncode = shell.wait(60)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(shell.pid, signal.SIGTERM)
        return subprocess.CompletedProcess(
            shell.args, returncode, log.read_text(), (tmp_path / "block.err").read_text()
        )

    printed = output.read_text()
    assert f"AE title GATEWAY on port {ports['dicom']} -> pipeline default" in printed
    series = ct_series(clone / "study", 5)
    defaults = IngestSettings()
    _total, used, free = shutil.disk_usage(clone)  # as the spool measures itself
    usage = SpoolUsage(used_bytes=used, free_bytes=free)
    if not spool_has_room(usage, defaults.storage_watermark_percent, defaults.reserved_storage_gb):
        # What the README promises on such a disk, instead of a stored study.
        assert "ingest.storage_watermark_percent" in printed, printed
        sent = run(blocks[1].splitlines()[0])
        assert "Temporary Congestion" in sent.stdout + sent.stderr, sent
        pytest.skip(f"this machine's disk is too full for the zero-config defaults: {usage}")

    send_and_look = run(blocks[1])
    assert send_and_look.returncode == 0, send_and_look
    (event,) = [json.loads(line) for line in send_and_look.stdout.splitlines()]
    assert event["data"]["instance_count"] == len(series)

    export = blocks[2].replace("ASSOCIATION_ID", event["id"])
    exported = run(export)  # storescp in the background ("&"), as the README has it
    assert exported.returncode == 0, exported
    assert f"example: succeeded, sent {len(series)}, failed 0" in exported.stdout
    received = {r.sop_instance_uid: r for r in map(read_received, (clone / "received").iterdir())}
    assert sorted(received) == sorted(s.uids.sop_instance for s in series)
    for instance in series:
        assert instance.path.read_bytes().endswith(received[instance.uids.sop_instance].data_set)

    production = blocks[3].split()
    assert production == [
        "dicom-gateway", "ingest", "--config", "gateway.toml",
        "dicom-gateway", "export", "--config", "gateway.toml",
    ]  # fmt: skip
    checked = run("dicom-gateway check-config --config gateway.toml")
    assert checked.returncode == 0, checked
