"""The spool: where received instances wait, fsynced, until their object is in storage.

Layout under ``spool_dir``::

    journal.sqlite3          the journal (see journal.py)
    incoming/                pynetdicom writes each arriving data set here
    associations/<id>/       instances of one association, named by arrival order

File names never contain anything the sender chose, so no UID can steer a path.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from gateway.fsync import fsync_directory, make_directories
from ingest.policy import SpoolUsage


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.associations = root / "associations"
        self.journal_path = root / "journal.sqlite3"

    def prepare(self) -> None:
        """Create the spool's directories, each durable in its parent: a spool created at the
        first start vanished in a power cut with every instance it held."""
        for directory in (self.root, self.incoming, self.associations):
            make_directories(directory)

    def usage(self) -> SpoolUsage:
        _total, used, free = shutil.disk_usage(self.root)
        return SpoolUsage(used_bytes=used, free_bytes=free)

    def association_dir(self, association_id: str) -> Path:
        return self.associations / association_id

    def open_association(self, association_id: str) -> None:
        directory = self.association_dir(association_id)
        directory.mkdir(exist_ok=True)
        fsync_directory(self.associations)

    def adopt(self, received: Path, association_id: str, seq: int) -> str:
        """Move a received data set into the association's directory, durably.

        Once this returns, the file and its name survive a power cut. It is renamed first and
        synced after: the file's fsync then commits the rename with it (ext4's journal), and
        the directory's fsync finds little left to do. Until this returns nothing refers to
        the file (no journal row, no answer to the sender), so a crash in between leaves only
        a stray file in an association that never released, which recovery removes with it.
        Returns the file's name in the association's directory.
        """
        name = f"{seq:06d}.dcm"
        directory = self.association_dir(association_id)
        adopted = directory / name
        os.replace(received, adopted)
        try:
            fd = os.open(adopted, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_directory(directory)
        except OSError:
            adopted.unlink(missing_ok=True)
            raise
        return name

    def instance_path(self, association_id: str, spool_name: str) -> Path:
        return self.association_dir(association_id) / spool_name

    def remove_association(self, association_id: str) -> None:
        directory = self.association_dir(association_id)
        if directory.exists():
            shutil.rmtree(directory)

    def clear_incoming(self, older_than: float | None = None) -> int:
        """Remove partial data sets of transfers that died; returns how many.

        pynetdicom flushes the file on every fragment it receives, so a file untouched for
        longer than the network timeout belongs to an association that is gone. At start-up
        (``older_than=None``) everything there is a leftover.
        """
        now = time.time()
        removed = 0
        for leftover in self.incoming.iterdir():
            try:
                modified = leftover.stat().st_mtime
            except FileNotFoundError:
                continue  # adopted into its association (or removed) since it was listed
            if older_than is None or now - modified > older_than:
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed
