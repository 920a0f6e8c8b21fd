"""The real gateway as a subprocess, configured by a TOML file written from a dict.

``GatewayProcess(config, directory).start()`` writes ``directory/gateway.toml``, runs
``python -m dicom_gateway ingest --config directory/gateway.toml`` with its output appended to
``directory/gateway.log``, and returns once the SCP answers an association on its port. Tests
crash it (:meth:`~GatewayProcess.kill`), stop it (:meth:`~GatewayProcess.terminate`) and start it
again with the same configuration and directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

from gateway_client.testing import gateway_environment as plugin_gateway_environment
from gateway_client.testing import netdicom_setting, to_toml
from tests.support.dcmtk import echoscu
from tests.support.net import wait_until
from tests.support.services import S3Service

#: The repository root, put on the child's PYTHONPATH so ``-m dicom_gateway`` works uninstalled too.
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

#: What the ``gateway_factory`` fixture yields: start a gateway from a configuration.
GatewayFactory = Callable[[Mapping[str, Any]], "GatewayProcess"]


class GatewayProcess:
    """One gateway process (``ingest`` unless a subclass says otherwise) and its files.

    Subclasses for other services set :attr:`service` and override :meth:`_answers`, the
    readiness check that :meth:`start` polls.
    """

    service = "ingest"

    def __init__(
        self,
        config: Mapping[str, Any],
        directory: Path,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.directory = directory
        self.config_path = directory / "gateway.toml"
        self.log_path = directory / "gateway.log"
        self.startup_timeout = startup_timeout
        self._extra_env = dict(env or {})
        self._process: subprocess.Popen[bytes] | None = None
        ingest = config.get("ingest", {})
        self.port: int = int(ingest.get("port", 11112))
        host = str(ingest.get("host", "127.0.0.1"))
        self.host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        ae_titles = [str(ae["ae_title"]) for ae in ingest.get("ae", ())]
        self.called_ae = ae_titles[0] if ae_titles else "GATEWAY"
        # With TLS the probe shows the listener's own certificate as its client certificate
        # (signed by the CA that client certificates must be signed by, if one is set).
        tls = ingest.get("tls")
        self.probe_args: tuple[str, ...] = ()
        if tls:
            trusted = tls.get("client_ca") or tls["certificate"]
            self.probe_args = (
                *("+tls", str(tls["private_key"]), str(tls["certificate"]), "-pw"),
                *("+cf", str(trusted)),
            )
        sources = config.get("sources", ())
        # The probe calls as a configured source, so that reject_unknown_sources does not
        # turn it away; a rejection would still prove that the SCP is up.
        self.probe_calling_ae = str(sources[0]["ae_title"]) if sources else "GWTEST-PROBE"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended, None while it runs (or never started)."""
        return self._process.poll() if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start (or restart) the process and wait until it answers on its DICOM port."""
        if self.is_running():
            raise RuntimeError(f"the gateway (pid {self.pid}) is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(to_toml(self.config))
        command = [
            sys.executable,
            "-m",
            "dicom_gateway",
            self.service,
            "--config",
            str(self.config_path),
        ]
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
        try:
            wait_until(self._answers, self.startup_timeout, f"{self.service} ready")
        except TimeoutError:
            self.kill()
            raise AssertionError(
                f"{self.service} was not ready within {self.startup_timeout:g} s\n{self.log_tail()}"
            ) from None
        return self

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the exit; returns the exit code (fails the test on a hang)."""
        process = self._require_process()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                f"the gateway did not exit within {timeout:g} s of SIGTERM\n{self.log_tail()}"
            ) from None

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

    def log_text(self) -> str:
        """Everything the process (and its earlier runs) wrote to stdout and stderr."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- {self.log_path} (last {lines} lines)\n{tail}"

    def _answers(self) -> bool:
        process = self._require_process()
        if process.poll() is not None:
            raise AssertionError(
                f"the gateway exited with {process.returncode} while starting\n{self.log_tail()}"
            )
        # --abort: an aborted association publishes no event, so the probe leaves no trace
        # in the test's event stream. Accepted or rejected, the SCP has answered.
        result = echoscu(
            self.host,
            self.port,
            called_ae=self.called_ae,
            calling_ae=self.probe_calling_ae,
            extra_args=("--abort", "-to", "2", "-ta", "5", *self.probe_args),
            timeout=15,
        )
        return result.ok or result.rejection is not None

    def _environment(self) -> dict[str, str]:
        return {**gateway_environment(), **self._extra_env}

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the gateway has not been started")
        return self._process


def gateway_environment() -> dict[str, str]:
    """The environment of a gateway subprocess: only its TOML file configures it.

    GATEWAY_* settings of the caller's environment (GATEWAY_TEST_* included) are dropped, and
    the repository is on the path so that ``-m dicom_gateway`` runs this checkout.
    """
    env = plugin_gateway_environment()
    python_path = [str(REPOSITORY_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    return env


def basic_config(
    *,
    port: int,
    spool_dir: Path,
    amqp_url: str,
    s3: S3Service,
    bucket: str,
    ae_title: str = "GATEWAY",
    pipeline: str = "default",
) -> dict[str, Any]:
    """A minimal working configuration (one AE title, any caller) to adjust per test."""
    return {
        **netdicom_setting(),
        "ingest": {
            "host": "127.0.0.1",
            "port": port,
            "spool_dir": str(spool_dir),
            "ae": [{"ae_title": ae_title, "pipeline": pipeline}],
            # How full the test machine's disk is must not decide a test (the production
            # defaults, 75% and 5 GiB, refuse associations on a busy developer disk).
            "storage_watermark_percent": 99,
            "reserved_storage_gb": 1,
        },
        "storage": {
            "backend": "s3",
            "endpoint": s3.endpoint,
            "bucket": bucket,
            "access_key": s3.access_key,
            "secret_key": s3.secret_key,
            "secure": s3.secure,
        },
        "broker": {"url": amqp_url},
        # Off unless a test asks: several gateways run at once, and would share the defaults.
        "http": {"ingest_port": 0, "export_port": 0},
    }
