"""A test file system that forgets whatever was not synced: a power cut, for the spool.

``kill -9`` leaves the kernel's page cache alone, so a missing ``fsync`` (of a file, or of a
directory after a create, rename or unlink) passes every crash test run on a real disk. This
mount does not: it is a FUSE pass-through over a backing folder (run by
:mod:`tests.support.power_loss_daemon`) that tracks which data and which directory entries
are durable, and :meth:`PowerLossFs.cut` rolls the folder back to exactly that: files cut back
or restored to their last synced contents, names made since their directory's last ``fsync``
removed, renames and unlinks since then undone. The rules, POSIX's promise rather than what
ext4 happens to keep, and what is not modelled are in :mod:`tests.support.power_loss_model`.

Power loss as a test makes it: kill every process that has the mount open, then
:meth:`~PowerLossFs.cut` (operations still arriving meanwhile fail with ``EIO``; the mount
waits for the killed processes to let go, then is unmounted and rolled back), then
:meth:`~PowerLossFs.mount` again and restart on what was kept.

SQLite works on it in WAL mode: the mount does not use ``direct_io``, so the ``-shm`` file can
be mapped shared (FUSE sends the mapped pages back as writes), and locks are the kernel's own
(the file system implements neither POSIX nor BSD locks, so FUSE keeps them locally, which is
right for processes on one machine). The ``-shm`` file is never synced, so a cut leaves it
empty, and SQLite rebuilds it from the write-ahead log as it does after any crash.

Needs ``/dev/fuse``, ``fusermount3`` (Debian's ``fuse3``), libfuse 3 and mfusepy (the
``test`` extra); :func:`power_loss_fs` skips a test where one is missing, or fails it where
the test environment says FUSE is required (``GATEWAY_TEST_FUSE_REQUIRED``, set by CI).
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway_client.testing import wait_until
from tests.support.power_loss_model import Losses

MOUNT_SECONDS = 15.0
#: The cut's unmount waits up to 10 s for killed processes to let go (power_loss_daemon).
CUT_SECONDS = 30.0
_REPOSITORY = Path(__file__).resolve().parents[2]


class PowerLossFsError(RuntimeError):
    """The mount did not come up, or the cut did not finish."""


def fuse_unavailable() -> str | None:
    """Why this machine cannot run the mount, or None if it looks as if it can."""
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (Debian package fuse3)"
    if ctypes.util.find_library("fuse3") is None:
        return "no libfuse 3 (Debian package fuse3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "no mfusepy (pip install -e '.[test]')"
    return None


class PowerLossFs:
    """The mount at ``root/mnt`` over ``root/backing`` (durable copies in ``root/durable``,
    the FUSE process's messages in ``root/daemon.log``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.backing = root / "backing"
        self.mountpoint = root / "mnt"
        self.durable = root / "durable"
        self.log = root / "daemon.log"
        self._process: subprocess.Popen[bytes] | None = None
        for directory in (self.backing, self.mountpoint):
            directory.mkdir(parents=True, exist_ok=True)

    def mount(self, timeout: float = MOUNT_SECONDS) -> Path:
        """Mount the backing folder as it is now (all of it durable); returns the mountpoint."""
        if self._process is not None:
            raise PowerLossFsError(f"{self.mountpoint} is mounted already")
        shutil.rmtree(self.durable, ignore_errors=True)
        self.durable.mkdir()
        environment = {**os.environ, "PYTHONPATH": str(_REPOSITORY)}
        folders = (str(self.backing), str(self.mountpoint), str(self.durable))
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.power_loss_daemon", *folders],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=environment,
                start_new_session=True,  # a test's killpg of its processes spares the mount
            )
        process = self._process

        def mounted() -> bool:
            if process.poll() is not None:
                self._process = None
                raise PowerLossFsError(f"the mount ended at once:\n{self._log_tail()}")
            return os.path.ismount(self.mountpoint)

        try:
            wait_until(mounted, timeout, f"{self.mountpoint} mounted")
        except TimeoutError:
            self._abandon()
            raise PowerLossFsError(f"not mounted in {timeout:g} s:\n{self._log_tail()}") from None
        return self.mountpoint

    def cut(self, timeout: float = CUT_SECONDS) -> Losses:
        """The power cut: the mount is gone and the backing folder holds only what was durable.
        Kill the processes that use the mount first. Returns what the cut undid."""
        process = self._mounted()
        try:
            out, _ = process.communicate(b"cut\n", timeout)
        except subprocess.TimeoutExpired:
            self._abandon()
            raise PowerLossFsError(
                f"the cut took over {timeout:g} s:\n{self._log_tail()}"
            ) from None
        self._process = None
        if process.returncode != 0 or not out.strip():
            raise PowerLossFsError(f"the cut failed ({process.returncode}):\n{self._log_tail()}")
        return Losses(**json.loads(out.splitlines()[-1]))

    def unmount(self, timeout: float = CUT_SECONDS) -> None:
        """Unmount without a cut (everything written stays in the backing folder)."""
        process = self._mounted()
        try:
            process.communicate(b"", timeout)
        except subprocess.TimeoutExpired:
            self._abandon()
            raise PowerLossFsError(
                f"unmount took over {timeout:g} s:\n{self._log_tail()}"
            ) from None
        finally:
            self._process = None

    @property
    def mounted(self) -> bool:
        return self._process is not None

    def _mounted(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise PowerLossFsError(f"{self.mountpoint} is not mounted")
        return self._process

    def _abandon(self) -> None:
        """Kill the FUSE process and detach whatever is left of the mount."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        subprocess.run(["fusermount3", "-u", "-z", "-q", str(self.mountpoint)], check=False)

    def _log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def skip_without_fuse(*, required: bool, reason: str | None = None) -> None:
    """Skip the test where FUSE cannot run (``reason``, else :func:`fuse_unavailable`), or
    fail it if FUSE is ``required``."""
    reason = reason or fuse_unavailable()
    if reason is not None:
        message = f"the power-loss file system cannot run here: {reason}"
        if required:
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def power_loss_fs(root: Path, *, required: bool) -> Iterator[PowerLossFs]:
    """A mounted :class:`PowerLossFs` under ``root`` for the block; the test is skipped where
    FUSE is missing or mounting is refused, or fails if FUSE is ``required``."""
    skip_without_fuse(required=required)
    fs = PowerLossFs(root)
    try:
        fs.mount()
    except PowerLossFsError as exc:
        skip_without_fuse(required=required, reason=f"mounting it failed: {exc}")
    try:
        yield fs
    finally:
        if fs.mounted:
            fs.unmount()
