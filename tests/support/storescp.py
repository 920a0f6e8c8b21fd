"""dcmtk's storescp as a reference receiver, for the tests and the benchmarks.

``-pm`` accepts unknown SOP classes, ``+xa`` every transfer syntax dcmtk knows, ``+B`` writes
each data set exactly as received behind storescp's own file meta, ``-dhl`` skips reverse DNS
lookups. ``fork`` serves each association in a child process of its own (dcmtk's way to serve
several at once); ``max_pdu`` sets the largest PDU it receives. It runs with ``TCP_NODELAY=1``
(:func:`tests.support.dcmtk.dcmtk_environment`): as a receiver without it, a 300-instance send
takes seconds instead of a fraction of one. ``nodelay=False`` runs it with dcmtk's defaults
instead (the benchmark's Nagle rows).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from pydicom.filereader import read_file_meta_info

from tests.support.dcmtk import DCMTK_BIN, dcmtk_environment, echoscu
from tests.support.factories import dataset_digest
from tests.support.net import free_port, wait_until
from tests.support.proc import peak_rss


class Storescp:
    """storescp on ``port`` (a free one by default), started by entering the block, ready when
    it answers a C-ECHO (a rejection counts: ``--refuse`` makes a useful rejecting peer).

    Received files land in ``directory / "received"`` (named ``<modality>.<SOP instance
    UID>``), the log in ``directory / "storescp.log"``.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        ae_title: str = "STORESCP",
        extra_args: Sequence[str] = (),
        fork: bool = False,
        max_pdu: int | None = None,
        nodelay: bool = True,
        bin_dir: Path = DCMTK_BIN,
        startup_timeout: float = 15.0,
    ) -> None:
        self.output_dir = directory / "received"
        self.log_path = directory / "storescp.log"
        # storescp cannot report a port the system chose: one that is free now.
        self.port = port if port is not None else free_port()
        self.ae_title = ae_title
        self.extra_args = tuple(extra_args)
        self.fork = fork
        self.max_pdu = max_pdu
        self.nodelay = nodelay
        self.bin_dir = bin_dir
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The listening process (with ``fork``, the parent of each association's)."""
        if self._process is None:
            raise RuntimeError("storescp has not been started")
        return self._process.pid

    def __enter__(self) -> Self:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        command = (
            str(self.bin_dir / "storescp"),
            "-pm",
            "+xa",
            "+B",
            "-dhl",
            *(["--fork"] if self.fork else []),
            *(["--max-pdu", str(self.max_pdu)] if self.max_pdu is not None else []),
            "-aet",
            self.ae_title,
            "-od",
            str(self.output_dir),
            *self.extra_args,
            str(self.port),
        )
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dcmtk_environment(nodelay=self.nodelay),
            )
        try:
            wait_until(self._answers_echo, self.startup_timeout, "storescp answering C-ECHO")
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

    def received_files(self) -> list[Path]:
        return sorted(p for p in self.output_dir.iterdir() if p.is_file())

    def received_digests(self) -> Iterator[tuple[str, str]]:
        """(SOP Instance UID by its file meta, SHA-256 of the data set) of every file received,
        read in pieces (large instances are never held whole)."""
        for path in self.received_files():
            uid = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
            with path.open("rb") as stream:
                yield uid, dataset_digest(stream)[0]

    def peak_rss(self) -> int | None:
        """The listening process's peak resident set size in bytes (None once it is gone)."""
        return peak_rss(self.pid)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout)

    def _answers_echo(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            tail = "\n".join(self.log_text().splitlines()[-40:])
            raise AssertionError(
                f"storescp exited with {self._process.returncode} while starting:\n{tail}"
            )
        result = echoscu(
            "127.0.0.1",
            self.port,
            called_ae=self.ae_title,
            extra_args=("-to", "2"),
            timeout=10,
            bin_dir=self.bin_dir,
        )
        # A rejection is an answer too: storescp --refuse is a useful rejecting peer.
        return result.ok or result.rejection is not None
