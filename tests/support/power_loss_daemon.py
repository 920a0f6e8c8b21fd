"""The power-loss file system's FUSE process: a pass-through mount that remembers what is durable.

Run as ``python -m tests.support.power_loss_daemon BACKING MOUNTPOINT DURABLE`` by
:class:`tests.support.power_loss_fs.PowerLossFs`, which documents what it models. Every change
goes to the backing folder at once (what the processes on the mount read is what they wrote)
and through :class:`~tests.support.power_loss_model.DurableTree`; an ``fsync`` also copies what
the file changed since its last one into its durable copy in ``DURABLE``, one file per node.

A line ``cut`` on standard input is the power cut: every operation fails with ``EIO`` from
then on, the mount is unmounted, and the backing folder is rebuilt from the durable copies as
the tree's survivors name them; the process prints what the cut undid (a JSON line of
:class:`~tests.support.power_loss_model.Losses`) and exits. SIGTERM (or standard input
closing) unmounts without a cut.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

import mfusepy

from tests.support.power_loss_model import DurableTree, Kind, Losses, Node

#: How long the cut waits for the processes on the mount to let go of it (they were killed
#: just before) before it detaches the mount lazily.
UNMOUNT_SECONDS = 10.0
_COPY_CHUNK = 1 << 20
#: Flags the backing file is not opened with: the kernel resolves O_APPEND to an offset
#: (and ``pwrite`` would append regardless of it), and creating or truncating is done here.
_NOT_PASSED_ON = os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY
_STATVFS_FIELDS = (
    "f_bsize",
    "f_frsize",
    "f_blocks",
    "f_bfree",
    "f_bavail",
    "f_files",
    "f_ffree",
    "f_favail",
    "f_flag",
    "f_namemax",
)
_STAT_FIELDS = (
    "st_mode",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_blocks",
    "st_atime_ns",
    "st_mtime_ns",
    "st_ctime_ns",
)


@dataclasses.dataclass(frozen=True)
class _Handle:
    fd: int
    node: Node


class DurabilityTracking(mfusepy.Operations):  # type: ignore[misc]
    """The mount's operations. One lock covers the tree and each change to the backing folder
    with it, so that the two agree; reads and writes of file data run outside it."""

    use_ns = True

    def __init__(self, backing: Path, durable: Path) -> None:
        self._backing = backing
        self._durable = durable
        self._lock = threading.Lock()
        self._handles: dict[int, _Handle] = {}
        self._frozen = False
        self.tree = DurableTree()
        self._adopt_backing()

    def _adopt_backing(self) -> None:
        """Everything in the backing folder at the start is durable: copied to the durable
        store now, as the writes that follow change it in place."""
        for parent, directories, files in os.walk(self._backing):
            relative = PurePosixPath(Path(parent).relative_to(self._backing))
            for name in directories:
                self.tree.existing(relative / name, Kind.DIRECTORY)
            for name in files:
                node = self.tree.existing(relative / name, Kind.FILE)
                shutil.copyfile(Path(parent) / name, self._durable / str(node.number))

    def freeze(self) -> None:
        """The power cut: nothing changes the durable state any more, and nothing succeeds."""
        with self._lock:
            self._frozen = True

    def _real(self, path: str) -> str:
        return f"{self._backing}{path}"

    def _alive(self) -> None:
        """Called with the lock held, before any change."""
        if self._frozen:
            raise mfusepy.FuseOSError(errno.EIO)

    # -- reading the tree ---------------------------------------------------------------------

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        with self._lock:
            self._alive()
        st = os.fstat(fh) if path is None and fh is not None else os.lstat(self._real(path or "/"))
        return {name: getattr(st, name) for name in _STAT_FIELDS}

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._lock:
            self._alive()
        return [".", "..", *os.listdir(self._real(path))]

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._backing)
        return {name: getattr(st, name) for name in _STATVFS_FIELDS}

    # -- names --------------------------------------------------------------------------------

    def mkdir(self, path: str, mode: int) -> None:
        with self._lock:
            self._alive()
            os.mkdir(self._real(path), mode)
            self.tree.create(path, Kind.DIRECTORY)

    def rmdir(self, path: str) -> None:
        with self._lock:
            self._alive()
            os.rmdir(self._real(path))
            self.tree.remove(path)

    def unlink(self, path: str) -> None:
        with self._lock:
            self._alive()
            os.unlink(self._real(path))
            self.tree.remove(path)

    def rename(self, old: str, new: str) -> None:
        with self._lock:
            self._alive()
            os.rename(self._real(old), self._real(new))
            self.tree.rename(old, new)

    def fsyncdir(self, path: str, datasync: int, fh: int) -> None:
        with self._lock:
            self._alive()
            self.tree.sync_directory(self.tree.node(path))

    def chmod(self, path: str, mode: int) -> None:
        with self._lock:
            self._alive()
            os.chmod(self._real(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        with self._lock:
            self._alive()
            os.lchown(self._real(path), uid, gid)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        with self._lock:
            self._alive()
            if times is None:
                os.utime(self._real(path))
            else:
                os.utime(self._real(path), ns=times)

    # -- files --------------------------------------------------------------------------------

    def create(self, path: str, mode: int, flags: int) -> int:
        with self._lock:
            self._alive()
            real = self._real(path)
            old_size = os.lstat(real).st_size if os.path.lexists(real) else None
            fd = os.open(real, _backing_flags(flags) | os.O_CREAT | (flags & os.O_TRUNC), mode)
            node = self.tree.create(path, Kind.FILE) if old_size is None else self.tree.node(path)
            if old_size is not None and flags & os.O_TRUNC:
                self.tree.resized(node, old_size, 0)
            self._handles[fd] = _Handle(fd, node)
            return fd

    def open(self, path: str, flags: int) -> int:
        with self._lock:
            self._alive()
            real = self._real(path)
            old_size = os.lstat(real).st_size
            fd = os.open(real, _backing_flags(flags) | (flags & os.O_TRUNC))
            node = self.tree.node(path)
            if flags & os.O_TRUNC:
                self.tree.resized(node, old_size, 0)
            self._handles[fd] = _Handle(fd, node)
            return fd

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        with self._lock:
            self._alive()
        return os.pread(fh, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        # Outside the lock: a write that has not returned yet need not be in a concurrent
        # fsync's copy, and is recorded as changed for the next one.
        written = os.pwrite(fh, data, offset)
        with self._lock:
            self._alive()
            self.tree.written(self._handles[fh].node, offset, written)
        return written

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        with self._lock:
            self._alive()
            if fh is not None:
                node = self._handles[fh].node
                old_size = os.fstat(fh).st_size
                os.ftruncate(fh, length)
            else:
                real = self._real(path or "/")
                node = self.tree.node(path or "/")
                old_size = os.lstat(real).st_size
                os.truncate(real, length)
            self.tree.resized(node, old_size, length)

    def fsync(self, path: str | None, datasync: int, fh: int) -> None:
        with self._lock:
            self._alive()
            node = self._handles[fh].node
            ranges = self.tree.sync_file(node)
            size = os.fstat(fh).st_size
            copy = os.open(self._durable / str(node.number), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.ftruncate(copy, size)
                for start, end in ranges:
                    _copy_range(fh, copy, start, min(end, size))
            finally:
                os.close(copy)

    def release(self, path: str | None, fh: int) -> None:
        # Allowed after the cut too: the killed processes' descriptors are closed then.
        with self._lock:
            del self._handles[fh]
        os.close(fh)


class _Mount(mfusepy.FUSE):  # type: ignore[misc]
    """mfusepy's bridge with two of its libfuse 3 calls passed on in full: ``rename``'s flags
    (``RENAME_NOREPLACE``, ``RENAME_EXCHANGE``), which it drops, are refused instead of being
    ignored, and ``ftruncate`` gets its file handle (an unlinked file has no path)."""

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        if flags:
            return -errno.EINVAL
        return int(super().rename_fuse_3(old, new, flags) or 0)

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        fh = fip.contents.fh if fip else None
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        return int(self.operations.truncate(decoded, length, fh) or 0)


def _backing_flags(flags: int) -> int:
    """The backing file is always opened readable, for the fsync's copy."""
    flags &= ~_NOT_PASSED_ON
    if flags & os.O_ACCMODE == os.O_WRONLY:
        flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
    return flags | os.O_CLOEXEC


def _copy_range(source: int, target: int, start: int, end: int) -> None:
    while start < end:
        chunk = os.pread(source, min(_COPY_CHUNK, end - start), start)
        if not chunk:
            return  # cut shorter meanwhile: the size was set from the file already
        os.pwrite(target, chunk, start)
        start += len(chunk)


def restore(backing: Path, tree: DurableTree, durable: Path) -> Losses:
    """Rebuild ``backing`` as the durable state (``tree``'s survivors, contents from
    ``durable``); returns what that undid. The mount must be gone."""
    losses = tree.losses()
    rebuilt = backing.with_name(f"{backing.name}.rebuilt")
    shutil.rmtree(rebuilt, ignore_errors=True)  # left by a roll-back that was itself cut short
    rebuilt.mkdir()
    for survivor in tree.survivors():
        target = rebuilt / survivor.path
        if survivor.node.kind is Kind.DIRECTORY:
            target.mkdir()
        elif survivor.node.synced:
            # A copy, not a link: a file a half-synced rename left under two names is two.
            shutil.copyfile(durable / str(survivor.node.number), target)
        else:
            target.touch()
    cut = backing.with_name(f"{backing.name}.cut")
    shutil.rmtree(cut, ignore_errors=True)
    backing.rename(cut)
    rebuilt.rename(backing)
    shutil.rmtree(cut)
    return losses


def _unmount(mountpoint: Path) -> None:
    """Unmount, waiting for processes just killed to let go; detach lazily after that."""
    deadline = time.monotonic() + UNMOUNT_SECONDS
    while subprocess.run(["fusermount3", "-u", "-q", str(mountpoint)], check=False).returncode:
        if time.monotonic() > deadline:
            print(f"{mountpoint} still busy: detaching it lazily", file=sys.stderr, flush=True)
            subprocess.run(["fusermount3", "-u", "-z", "-q", str(mountpoint)], check=False)
            return
        time.sleep(0.02)  # the killed processes' descriptors are being closed


def _listen(operations: DurabilityTracking, mountpoint: Path, cut: threading.Event) -> None:
    """Standard input: ``cut`` cuts; its end (the test process gone) unmounts."""
    for line in sys.stdin:
        if line.strip() == "cut":
            operations.freeze()
            cut.set()
            break
    _unmount(mountpoint)


def main(arguments: list[str]) -> int:
    backing, mountpoint, durable = (Path(argument) for argument in arguments)
    operations = DurabilityTracking(backing, durable)
    cut = threading.Event()
    threading.Thread(
        target=_listen, args=(operations, mountpoint, cut), name="control", daemon=True
    ).start()
    # hard_remove: an unlinked file still open is gone from its directory at once, as on a
    # disk, instead of being renamed to a hidden name that the tree would have to know.
    _Mount(operations, str(mountpoint), foreground=True, hard_remove=True, fsname="power-loss")
    if cut.is_set():
        print(json.dumps(dataclasses.asdict(restore(backing, operations.tree, durable))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
