"""The processes under test: dcmtk's ``storescp`` and the gateway's ``ingest`` and ``export``.

Each is a context manager that starts the process, returns once it answers its protocol (a
C-ECHO, or ``/readyz``), and stops it at the end. :meth:`peak_rss` is read while the process
still runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from pydicom.filereader import read_file_meta_info

from bench.integrity import dataset_digest
from bench.processes import BenchError, Dcmtk, dcmtk_environment, peak_rss, stop, tree_peak_rss
from gateway_client.testing import free_port, gateway_environment, http_get, to_toml, wait_until

#: The repository root: put on the gateway's PYTHONPATH so that ``-m dicom_gateway`` runs
#: this checkout.
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_SECONDS = 60.0


class _Process:
    """A child process with a log file, started by :meth:`__enter__`."""

    name = "process"

    def __init__(self, directory: Path, startup_timeout: float) -> None:
        self.directory = directory
        self.log_path = directory / f"{self.name}.log"
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        if self._process is None:
            raise BenchError(f"{self.name} has not been started")
        return self._process.pid

    def __enter__(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=self._environment(),
            )
        try:
            wait_until(self._checked_ready, self.startup_timeout, f"{self.name} ready", 0.05)
        except TimeoutError:
            self.stop()
            raise BenchError(
                f"{self.name} was not ready within {self.startup_timeout:g} s\n{self.log_tail()}"
            ) from None
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _checked_ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self._process.returncode} while starting\n"
                f"{self.log_tail()}"
            )
        return self._ready()

    def peak_rss(self) -> int | None:
        return peak_rss(self.pid)

    def stop(self) -> int | None:
        if self._process is None:
            return None
        return stop(self._process)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log_path} (last {lines} lines)\n" + "\n".join(tail)


def _echo(dcmtk: Dcmtk, port: int, called_ae: str, *extra: str) -> bool:
    """One C-ECHO; true when the SCP accepted or rejected the association (it answered)."""
    completed = subprocess.run(
        [
            dcmtk.tool("echoscu"),
            "-aet",
            "BENCH-PROBE",
            "-aec",
            called_ae,
            "-to",
            "2",
            "-ta",
            "5",
            *extra,
            "127.0.0.1",
            str(port),
        ],
        capture_output=True,
        text=True,
        errors="replace",
        env=dcmtk_environment(),
        check=False,
        timeout=15,
    )
    return completed.returncode == 0 or "Association Rejected" in completed.stderr


class Storescp(_Process):
    """dcmtk's storescp keeping the received bytes (``-pm +xa +B``), files in :attr:`output`.

    ``fork``: one child process per association, dcmtk's way to serve several at once.
    """

    name = "storescp"
    ae_title = "STORESCP"

    def __init__(
        self,
        dcmtk: Dcmtk,
        directory: Path,
        *,
        fork: bool = False,
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(directory, startup_timeout)
        self.dcmtk = dcmtk
        self.fork = fork
        self.port = free_port()
        self.output = directory / "received"

    def _command(self) -> list[str]:
        self.output.mkdir(parents=True, exist_ok=True)
        return [
            self.dcmtk.tool("storescp"),
            "-pm",  # accept unknown SOP classes
            "+xa",  # accept every transfer syntax
            "+B",  # write the data set exactly as received
            "-dhl",  # no reverse DNS lookups
            *(["--fork"] if self.fork else []),
            "-aet",
            self.ae_title,
            "-od",
            str(self.output),
            str(self.port),
        ]

    def _environment(self) -> dict[str, str]:
        return dcmtk_environment()

    def _ready(self) -> bool:
        return _echo(self.dcmtk, self.port, self.ae_title)

    def received(self) -> Iterator[tuple[str, str]]:
        """(SOP Instance UID, data set digest) of every file received, by its file meta."""
        for path in sorted(self.output.iterdir()):
            yield _meta_sop_instance_uid(path), _file_digest(path)


def _meta_sop_instance_uid(path: Path) -> str:
    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


def _file_digest(path: Path) -> str:
    with path.open("rb") as stream:
        return dataset_digest(stream)[0]


class GatewayProcess(_Process):
    """``python -m dicom_gateway ingest|export --config gateway.toml`` in ``directory``."""

    def __init__(
        self,
        service: Literal["ingest", "export"],
        config: Mapping[str, Any],
        directory: Path,
        dcmtk: Dcmtk,
        *,
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        self.name = f"gateway-{service}"
        super().__init__(directory, startup_timeout)
        self.service = service
        self.config = config
        self.config_path = directory / f"{service}.toml"
        self.dcmtk = dcmtk

    def _command(self) -> list[str]:
        self.config_path.write_text(to_toml(self.config))
        return [
            sys.executable,
            "-m",
            "dicom_gateway",
            self.service,
            "--config",
            str(self.config_path),
        ]

    def _environment(self) -> dict[str, str]:
        environment = gateway_environment()  # without GATEWAY_*: only the file configures it
        paths = [str(REPOSITORY_ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        environment["PYTHONPATH"] = os.pathsep.join(paths)
        return environment

    def peak_rss(self) -> int | None:
        """With worker processes, the sum of every process's peak."""
        return tree_peak_rss(self.pid)

    def _ready(self) -> bool:
        if self.service == "ingest":
            ingest = self.config["ingest"]
            # --abort: an aborted association publishes no event; any answer means it is up.
            return _echo(self.dcmtk, int(ingest["port"]), ingest["ae"][0]["ae_title"], "--abort")
        port = int(self.config["http"]["export_port"])
        try:
            # 503 until it is attached to its queue
            return http_get("127.0.0.1", port, "/readyz", timeout=5)[0] == 200
        except OSError:
            return False  # not listening yet
