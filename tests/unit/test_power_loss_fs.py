"""The power-loss file system on a real mount: after a cut the backing folder holds exactly what
was synced (tests/support/power_loss_fs.py), SQLite's durable commits included.

Each case runs real system calls on the mount, cuts, and compares the backing folder with what
POSIX promises to keep. Skipped where FUSE cannot run (failed where CI requires it).
"""

from __future__ import annotations

import errno
import io
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from contracts.keys import association_prefix, new_association_id, object_key
from gateway.objectstore import FileStore
from gateway.settings import StorageSettings
from gateway_client.testing import TestServices
from ingest.spool import Spool
from tests.support.power_loss_fs import PowerLossFs, power_loss_fs, skip_without_fuse
from tests.support.power_loss_model import Losses

DIR = "directory"


@pytest.fixture
def fs(tmp_path: Path, test_services: TestServices) -> Iterator[PowerLossFs]:
    with power_loss_fs(tmp_path / "power", required=test_services.fuse_required) as mounted:
        yield mounted


def run(root: Path, steps: str) -> None:
    """Steps separated by ``;``, each real system calls under ``root``: ``write P TEXT``
    (create or truncate, then write), ``append P TEXT``, ``sync P`` (fsync a file),
    ``syncdir P``, ``truncate P N``, ``mv P Q``, ``rm P``, ``mkdir P``."""
    for step in steps.split(";"):
        verb, name, *rest = step.split()
        path = root / name
        match verb:
            case "write" | "append":
                flags = os.O_TRUNC if verb == "write" else os.O_APPEND
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
                try:
                    os.write(fd, rest[0].encode())
                finally:
                    os.close(fd)
            case "sync" | "syncdir":
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            case "truncate":
                os.truncate(path, int(rest[0]))
            case "mv":
                os.rename(path, root / rest[0])
            case "rm":
                os.unlink(path)
            case "mkdir":
                os.mkdir(path)


def tree(root: Path) -> dict[str, str]:
    """Every name under ``root``: a file's text, or ``DIR``."""
    found = {}
    for parent, directories, files in os.walk(root):
        for name in directories:
            found[str((Path(parent) / name).relative_to(root))] = DIR
        for name in files:
            path = Path(parent) / name
            found[str(path.relative_to(root))] = path.read_text()
    return found


SCENARIOS = [
    # (what happened, the steps, what the cut keeps)
    ("written, nothing synced", "write a data", {}),
    ("a new file synced, its directory not", "write a data; sync a", {}),
    ("a new file and its directory synced", "write a data; sync a; syncdir .", {"a": "data"}),
    ("the name synced, the data not: empty", "write a data; syncdir .", {"a": ""}),
    (
        "an append not synced",
        "write a data; sync a; syncdir .; append a +more",
        {"a": "data"},
    ),
    (
        "an append synced",
        "write a data; sync a; syncdir .; append a +more; sync a",
        {"a": "data+more"},
    ),
    (
        "an overwrite not synced",
        "write a data; sync a; syncdir .; write a new",
        {"a": "data"},
    ),
    (
        "a truncate not synced",
        "write a data; sync a; syncdir .; truncate a 2",
        {"a": "data"},
    ),
    (
        "cut short, grown again, synced: zeros, not the old bytes",
        "write a data; sync a; syncdir .; truncate a 1; truncate a 3; sync a",
        {"a": "d\0\0"},
    ),
    ("a rename not synced: the old name", "write a data; sync a; syncdir .; mv a b", {"a": "data"}),
    (
        "a rename synced",
        "write a data; sync a; syncdir .; mv a b; syncdir .",
        {"b": "data"},
    ),
    (
        "a rename over a file, not synced: the replaced file",
        "write a old; sync a; syncdir .; write b new; sync b; mv b a",
        {"a": "old"},
    ),
    (
        # POSIX, not ext4's auto_da_alloc (which writes the data out before such a rename)
        "a rename over a file synced, the new file's data not: empty",
        "write a old; sync a; syncdir .; write b new; mv b a; syncdir .",
        {"a": ""},
    ),
    ("an unlink not synced", "write a data; sync a; syncdir .; rm a", {"a": "data"}),
    ("an unlink synced", "write a data; sync a; syncdir .; rm a; syncdir .", {}),
    (
        "a new directory synced inside, not in its parent: gone with its files",
        "mkdir d; write d/f data; sync d/f; syncdir d",
        {},
    ),
    (
        "a new directory synced inside and in its parent",
        "mkdir d; write d/f data; sync d/f; syncdir d; syncdir .",
        {"d": DIR, "d/f": "data"},
    ),
    (
        "a rename across directories synced in the target only: under both names",
        "mkdir x; mkdir y; write x/f data; sync x/f; syncdir x; syncdir .; mv x/f y/f; syncdir y",
        {"x": DIR, "y": DIR, "x/f": "data", "y/f": "data"},
    ),
    (
        "a rename across directories synced in the source only: under neither",
        "mkdir x; mkdir y; write x/f data; sync x/f; syncdir x; syncdir .; mv x/f y/f; syncdir x",
        {"x": DIR, "y": DIR},
    ),
]


@pytest.mark.parametrize(
    ("steps", "kept"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_a_cut_leaves_exactly_what_was_synced(
    fs: PowerLossFs, steps: str, kept: dict[str, str]
) -> None:
    run(fs.mountpoint, steps)
    fs.cut()
    assert tree(fs.backing) == kept


def test_what_was_there_at_the_mount_is_durable(fs: PowerLossFs) -> None:
    run(fs.mountpoint, "write a first; write b second; mkdir d; write d/c third")
    fs.unmount()  # no cut: all of it stays, and is durable for the next mount
    fs.mount()
    run(fs.mountpoint, "append a +more; rm b; mv d/c c; write e new; syncdir d")
    losses = fs.cut()
    assert tree(fs.backing) == {"a": "first", "b": "second", "d": DIR}
    # a's append undone; b back; c and e gone; d/c gone (d was synced after the move).
    assert losses == Losses(names_lost=2, names_back=1, files_rolled_back=1)


def test_the_mount_works_again_after_a_cut(fs: PowerLossFs) -> None:
    run(fs.mountpoint, "write a data; sync a; syncdir .; write b lost")
    fs.cut()
    fs.mount()
    assert tree(fs.mountpoint) == {"a": "data"}
    run(fs.mountpoint, "append a +more; sync a")
    fs.cut()
    assert tree(fs.backing) == {"a": "data+more"}


#: A process that writes a SQLite file the way the gateway does (gateway/sqlite_files.py)
#: and dies without closing it: a row committed with synchronous=FULL, then, if asked, one
#: committed without waiting for the disk (durable_with_next), then, if asked, another FULL.
_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from gateway.errors import JournalError
    from gateway.sqlite_files import ProcessesWriteLock, connect_durable, transaction

    path, commits = Path(sys.argv[1]), sys.argv[2:]
    db = connect_durable(path, "CREATE TABLE IF NOT EXISTS t (what TEXT)")
    lock = ProcessesWriteLock(path)
    for what in commits:
        with transaction(db, lock, JournalError, "test", durable_with_next=what == "next") as c:
            c.execute("INSERT INTO t VALUES (?)", (what,))
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize(
    ("commits", "kept"),
    [
        (["full"], ["full"]),
        (["full", "next"], ["full"]),
        (["full", "next", "full"], ["full", "next", "full"]),
    ],
    ids=["a FULL commit is kept", "a commit without a wait alone is lost", "...kept by the next"],
)
def test_sqlite_in_wal_mode_keeps_what_it_committed_durably(
    fs: PowerLossFs, commits: list[str], kept: list[str]
) -> None:
    # In folders the service makes itself: they were lost before connect_durable synced
    # them in their parents.
    database = fs.mountpoint / "state" / "ledger" / "file.sqlite3"
    writer = subprocess.run(
        [sys.executable, "-c", _WRITER, str(database), *commits], check=False, capture_output=True
    )
    assert writer.returncode == -9, writer.stderr.decode()
    fs.cut()
    fs.mount()
    with closing(sqlite3.connect(database)) as db:
        assert [row[0] for row in db.execute("SELECT what FROM t ORDER BY rowid")] == kept


def test_a_spool_made_at_the_first_start_keeps_its_instances(fs: PowerLossFs) -> None:
    """Found by test_ingest_power_loss.py: the spool directory, made by the first start, was
    never synced in its parent, and a cut took it away with every instance it held."""
    spool = Spool(fs.mountpoint / "var" / "spool")
    spool.prepare()
    spool.open_association("a")
    (spool.incoming / "received").write_bytes(b"instance")
    spool.adopt(spool.incoming / "received", "a", 1)
    fs.cut()
    assert tree(fs.backing) == {
        "var": DIR,
        "var/spool": DIR,
        "var/spool/incoming": DIR,
        "var/spool/associations": DIR,
        "var/spool/associations/a": DIR,
        "var/spool/associations/a/000001.dcm": "instance",
    }


def test_an_object_put_in_the_file_store_survives_a_cut(fs: PowerLossFs) -> None:
    """The embedded backend's store made an object's directories without syncing them: the
    object, synced and renamed into place, could vanish with them."""
    store = FileStore(StorageSettings(backend="file", path=fs.mountpoint / "objects"))
    key = object_key(new_association_id(), "1.2.3", "1.2.3.4", "1.2.3.4.5")
    store.ensure_ready()
    store.put(key, io.BytesIO(b"object"), 6)
    fs.cut()
    assert (fs.backing / "objects" / "dicom-gateway" / key).read_bytes() == b"object"


def test_objects_removed_from_the_file_store_stay_removed_after_a_cut(fs: PowerLossFs) -> None:
    """The embedded backend's store removed an aborted association's objects without syncing
    a directory: ingest forgot the association, and a cut brought its objects back as
    orphans (tests/integration/test_ingest_power_loss.py, embedded backends)."""
    store = FileStore(StorageSettings(backend="file", path=fs.mountpoint / "objects"))
    association = new_association_id()
    store.ensure_ready()
    for uid in ("1.2.3.4.5", "1.2.3.4.6"):
        store.put(object_key(association, "1.2.3", "1.2.3.4", uid), io.BytesIO(b"object"), 6)
    assert store.remove_prefix(association_prefix(association)) == 2
    fs.cut()
    assert not (fs.backing / "objects" / "dicom-gateway" / association).exists()


def test_after_the_cut_every_operation_fails(tmp_path: Path, test_services: TestServices) -> None:
    """Processes still on the mount when the power goes see errors, and change nothing."""
    skip_without_fuse(required=test_services.fuse_required)
    # Imported here: importing it loads libfuse, which the check above may find missing.
    from tests.support.power_loss_daemon import DurabilityTracking  # noqa: PLC0415

    (tmp_path / "backing").mkdir()
    (tmp_path / "durable").mkdir()
    operations = DurabilityTracking(tmp_path / "backing", tmp_path / "durable")
    fh = operations.create("/a", 0o644, os.O_WRONLY)
    operations.freeze()
    for call in (
        lambda: operations.write("/a", b"late", 0, fh),
        lambda: operations.fsync("/a", 0, fh),
        lambda: operations.mkdir("/d", 0o755),
        lambda: operations.getattr("/a"),
    ):
        with pytest.raises(OSError, match="Input/output") as raised:
            call()
        assert raised.value.errno == errno.EIO
    operations.release("/a", fh)
