"""One gateway process under test: the only way the tests, the pytest plugin and the
benchmarks start a gateway, wait for it and stop it.

``GatewayProcess(config, directory, service="ingest").start()`` writes
``directory/gateway.toml`` (:func:`~gateway_client.testing.config.for_process`: every
listener the configuration leaves unset on a port the system chooses), runs ``python -m
dicom_gateway <service> --config ... --port-file directory/ports.json`` with its output
appended to ``directory/gateway.log``, waits for the port file, and is ready when ``/readyz``
answers 200, for every service. :attr:`~GatewayProcess.port` and
:attr:`~GatewayProcess.http_port` are the ports the process reported.

Tests crash it (:meth:`~GatewayProcess.kill`, :meth:`~GatewayProcess.kill_all` with its
worker processes), stop it (:meth:`~GatewayProcess.terminate`) and start it again with the same
configuration and directory. The DICOM port the system chose at the first start is written
into the configuration file then, so that a restart (and anything else that reads the file)
listens on the same port: senders and proxies set up against it reach the restarted process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import gateway
from gateway.port_file import DICOM, HTTP
from gateway_client.testing.config import Service, for_process, merged
from gateway_client.testing.polling import http_get, wait_until
from gateway_client.testing.services import TestServices
from gateway_client.testing.toml_writer import to_toml

DEFAULT_STARTUP_SECONDS: Final = 30.0
#: How :meth:`GatewayProcess.start` runs the gateway: this interpreter and its packages.
PYTHON_COMMAND: Final = (sys.executable, "-m", "dicom_gateway")
#: ``ready``: ``/readyz`` answered 200. ``listening``: the port file is written (the listeners
#: are bound), for a test that starts a gateway which cannot become ready (a full spool, a
#: service cut off on purpose). Without HTTP endpoints, ``ready`` is ``listening``.
Readiness = Literal["ready", "listening"]

_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


class GatewayProcessError(RuntimeError):
    """The gateway did not start, did not stop when asked, or was asked for what it lacks."""


def gateway_environment() -> dict[str, str]:
    """The environment of a gateway process: only its TOML file configures it.

    ``GATEWAY_*`` variables of the caller (``GATEWAY_TEST_*`` included) are dropped; output is
    unbuffered, so log lines reach the file as they happen; the directory this process imported
    the gateway from comes first on the path, so that the child runs the same code (a checkout
    that is not installed included).
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environment["PYTHONUNBUFFERED"] = "1"
    source = str(Path(gateway.__file__).resolve().parents[1])
    environment["PYTHONPATH"] = os.pathsep.join(
        [source, *filter(None, [environment.get("PYTHONPATH")])]
    )
    return environment


class GatewayProcess:
    """One ``dicom-gateway`` service process and its files (see the module docstring).

    ``config`` None runs the service without a configuration file (the built-in defaults and
    whatever ``env`` sets). ``command`` replaces ``python -m dicom_gateway``, e.g. with the
    installed console script. ``services`` is the test environment (read from ``GATEWAY_TEST_*``
    when not given): its ``netdicom`` mode goes into every configuration.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None,
        directory: Path,
        *,
        service: Service = "ingest",
        env: Mapping[str, str] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_SECONDS,
        command: Sequence[str] = PYTHON_COMMAND,
        services: TestServices | None = None,
    ) -> None:
        self.config = config
        self.directory = directory
        self.service: Service = service
        self.config_path = directory / "gateway.toml"
        self.log_path = directory / "gateway.log"
        self.port_file = directory / "ports.json"
        self.startup_timeout = startup_timeout
        self.command = tuple(command)
        self.netdicom = (services or TestServices()).netdicom
        self._extra_env = dict(env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._ports: dict[str, int] | None = None
        self._pinned_port: int | None = None

    # --- what it is

    @property
    def prepared_config(self) -> dict[str, Any]:
        """The configuration as written to :attr:`config_path` (see the module docstring)."""
        if self.config is None:
            raise GatewayProcessError("this gateway runs without a configuration file")
        pinned = {} if self._pinned_port is None else {"ingest": {"port": self._pinned_port}}
        return for_process(merged(self.config, pinned), self.service, self.netdicom)

    @property
    def host(self) -> str:
        """Where to reach its DICOM listener."""
        return self._reachable(self._configured("ingest", "host"))

    @property
    def http_host(self) -> str:
        return self._reachable(self._configured("http", "host"))

    @property
    def ports(self) -> dict[str, int]:
        """The ports of its latest start, by listener (``dicom``, ``http``)."""
        if self._ports is None:
            raise GatewayProcessError(f"the gateway ({self.service}) has not been started")
        return dict(self._ports)

    @property
    def port(self) -> int:
        """The DICOM port."""
        return self._port(DICOM)

    @property
    def http_port(self) -> int:
        """The port of ``/healthz``, ``/readyz`` and ``/metrics``."""
        return self._port(HTTP)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended, None while it runs (or never started)."""
        return self._process.poll() if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def http_get(self, path: str) -> tuple[int, str]:
        """GET ``path`` (``/readyz``, ``/metrics``...): status and body."""
        return http_get(self.http_host, self.http_port, path)

    def log_text(self) -> str:
        """Everything the process (and its earlier runs) wrote to stdout and stderr."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- {self.log_path} (last {lines} lines)\n{tail}"

    # --- starting and stopping

    def start(self, until: Readiness = "ready") -> Self:
        """Start (or restart) the process and wait ``until`` it is ready or listening; raises
        :class:`GatewayProcessError` (with the log's tail) if it exits or takes too long."""
        if self.is_running():
            raise GatewayProcessError(f"the gateway (pid {self.pid}) is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port_file.unlink(missing_ok=True)
        command = [*self.command, self.service]
        if self.config is not None:
            self.config_path.write_text(to_toml(self.prepared_config))
            command += ["--config", str(self.config_path)]
        command += ["--port-file", str(self.port_file)]
        with self.log_path.open("ab") as log:
            log.write(f"--- test harness: starting {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=self._environment(),
                # A group of its own (with its worker processes): kill_all() ends them at once.
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        try:
            self._wait(self.port_file.exists, deadline, "the port file written")
            reported = json.loads(self.port_file.read_text())
            self._ports = {str(name): int(port) for name, port in reported.items()}
            if until == "ready" and HTTP in self._ports:
                self._wait(self._ready, deadline, "/readyz answering 200")
        except BaseException:
            self.kill_all()
            raise
        if DICOM in self._ports and self.config is not None and self._pinned_port is None:
            self._pinned_port = self._ports[DICOM]
            self.config_path.write_text(to_toml(self.prepared_config))
        return self

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit; returns the exit code. A process that does not exit
        within ``timeout`` is killed and :class:`GatewayProcessError` raised."""
        process = self._require_process()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            raise GatewayProcessError(
                f"the gateway did not exit within {timeout:g} s of SIGTERM\n{self.log_tail()}"
            ) from None

    def stop(self, timeout: float = 30.0) -> int | None:
        """For clean-up: SIGTERM, and SIGKILL for the whole group after ``timeout``; returns the
        exit code (None if it was never started). Never raises for a slow process."""
        if self._process is None:
            return None
        try:
            return self.terminate(timeout)
        except GatewayProcessError:
            return self._process.wait()

    def kill(self) -> int:
        """SIGKILL (a crash: no clean-up runs); returns the exit code."""
        process = self._require_process()
        if process.poll() is None:
            process.kill()
        return process.wait()

    def kill_all(self) -> int:
        """SIGKILL the process and its worker processes at the same moment (the machine or
        the container going down); returns the main process's exit code."""
        process = self._require_process()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- helpers

    def _environment(self) -> dict[str, str]:
        environment = {**gateway_environment(), **self._extra_env}
        if self.config is None and self.netdicom is not None:
            environment.setdefault("GATEWAY_NETDICOM", self.netdicom)
        return environment

    def _ready(self) -> bool:
        try:
            return http_get(self.http_host, self.http_port, "/readyz", timeout=5)[0] == 200
        except OSError:  # not answering yet
            return False

    def _wait(self, condition: Callable[[], bool], deadline: float, what: str) -> None:
        process = self._require_process()

        def checked() -> bool:
            if process.poll() is not None:
                raise GatewayProcessError(
                    f"the gateway ({self.service}) exited with {process.returncode} while "
                    f"starting\n{self.log_tail()}"
                )
            return condition()

        try:
            wait_until(checked, max(0.0, deadline - time.monotonic()), what)
        except TimeoutError:
            raise GatewayProcessError(
                f"the gateway ({self.service}) was not ready within {self.startup_timeout:g} s "
                f"(waiting for {what})\n{self.log_tail()}"
            ) from None

    def _port(self, listener: str) -> int:
        ports = self.ports
        if listener not in ports:
            raise GatewayProcessError(f"the gateway ({self.service}) has no {listener} listener")
        return ports[listener]

    def _configured(self, section: str, key: str) -> str:
        table = (self.config or {}).get(section, {})
        return str(table.get(key, "127.0.0.1"))

    @staticmethod
    def _reachable(host: str) -> str:
        return "127.0.0.1" if host in _ANY_ADDRESS else host

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise GatewayProcessError("the gateway has not been started")
        return self._process
