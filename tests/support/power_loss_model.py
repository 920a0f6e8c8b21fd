"""What a power cut keeps of a file tree: the bookkeeping of the power-loss file system.

:mod:`tests.support.power_loss_daemon` passes every change made on its mount through here, and
on a cut rebuilds the tree from :meth:`DurableTree.survivors`. Kept apart from FUSE so that the
rules are plain code with table tests (``tests/unit/test_power_loss_model.py``).

The rules are POSIX's promise, the weakest a real file system may keep, not what ext4 happens
to do:

* A file's contents (its bytes and its size) are durable as of its last ``fsync`` or
  ``fdatasync``, which count alike. A file never synced has no durable contents: if its name
  survives, it comes back empty.
* A directory's entries (each name and the file or directory it names) are durable as of the
  directory's last ``fsync``: a name created, renamed to or removed since then is undone by a
  cut, whatever was synced inside the file it names. A directory made since its parent's last
  ``fsync`` is gone with everything in it.
* A rename between two directories changes the entries of both, and each change is durable
  with its own directory's ``fsync``: in between, a cut may leave the file under both names
  (two copies) or under neither.
* Everything present when the mount starts is durable.

What it does not model: ext4's ``data=ordered`` extras (a file's ``fsync`` commits the journal
transaction that created its name; ``auto_da_alloc`` writes a file's data out before a rename
over an existing file or a truncate to zero commits), so code that relies on them fails here
and would pass on ext4; torn or reordered writes (a cut keeps exactly the synced state, never
part of an unsynced write, and never garbage in a never-synced file); metadata other than size
(mode, owner and times come back as last set); hard links and symbolic links (the file system
refuses them); ``sync()`` and ``syncfs()``, which FUSE does not pass on.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath


class Kind(Enum):
    FILE = "file"
    DIRECTORY = "directory"


@dataclass(eq=False)
class Node:
    """A file or directory, whatever names it has now or had at its last sync."""

    number: int
    kind: Kind
    #: A directory's entries now, and as of its last fsync.
    entries: dict[str, Node] = field(default_factory=dict)
    durable_entries: dict[str, Node] = field(default_factory=dict)
    #: A file's byte ranges changed since its last fsync (end exclusive), and whether it has
    #: durable contents at all.
    dirty: list[tuple[int, int]] = field(default_factory=list)
    synced: bool = False


@dataclass(frozen=True)
class Survivor:
    """A name a cut keeps, relative to the mount's root, and what it names."""

    path: PurePosixPath
    node: Node


@dataclass(frozen=True)
class Losses:
    """What a cut undid: names made since they were synced, names removed since, and files
    whose contents changed since their last fsync."""

    names_lost: int
    names_back: int
    files_rolled_back: int


def merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` sorted, with overlapping and touching ones joined and empty ones dropped."""
    result: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if result and start <= result[-1][1]:
            result[-1] = (result[-1][0], max(end, result[-1][1]))
        else:
            result.append((start, end))
    return result


def _parts(path: str | PurePosixPath) -> tuple[str, ...]:
    """The names along ``path`` below the root (``"/a/b"`` and ``"a/b"`` alike)."""
    return tuple(part for part in PurePosixPath(path).parts if part != "/")


class DurableTree:
    """The tree as it is now and as a cut would leave it. Not thread-safe: the caller holds
    one lock around each change and the I/O that goes with it."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self.root = Node(0, Kind.DIRECTORY)

    # -- what is there ------------------------------------------------------------------------

    def node(self, path: str | PurePosixPath) -> Node:
        """What ``path`` names now; :class:`KeyError` if nothing."""
        node = self.root
        for name in _parts(path):
            node = node.entries[name]
        return node

    def survivors(self) -> list[Survivor]:
        """Every name a cut now would keep, each directory before what is in it."""
        return list(_walk(self.root, PurePosixPath(), durable=True))

    def present(self) -> list[Survivor]:
        """Every name there is now, each directory before what is in it."""
        return list(_walk(self.root, PurePosixPath(), durable=False))

    def losses(self) -> Losses:
        """What a cut now would undo."""
        now = {s.path: s.node for s in self.present()}
        kept = {s.path: s.node for s in self.survivors()}
        return Losses(
            names_lost=sum(
                path not in kept or kept[path] is not node for path, node in now.items()
            ),
            names_back=sum(path not in now or now[path] is not node for path, node in kept.items()),
            files_rolled_back=sum(
                node.kind is Kind.FILE and bool(node.dirty) for node in kept.values()
            ),
        )

    # -- changes ------------------------------------------------------------------------------

    def existing(self, path: str | PurePosixPath, kind: Kind) -> Node:
        """A name found when the mount starts: durable, with durable contents."""
        node = self.create(path, kind)
        node.synced = True
        parent, name = self._parent(path)
        parent.durable_entries[name] = node
        return node

    def create(self, path: str | PurePosixPath, kind: Kind) -> Node:
        """A new file or directory at ``path`` (whose name is not durable yet)."""
        parent, name = self._parent(path)
        node = Node(next(self._numbers), kind)
        parent.entries[name] = node
        return node

    def written(self, node: Node, offset: int, length: int) -> None:
        node.dirty.append((offset, offset + length))

    def resized(self, node: Node, old_size: int, new_size: int) -> None:
        """A truncate: what lies between the two sizes changed (dropped, or now zeros)."""
        node.dirty.append((min(old_size, new_size), max(old_size, new_size)))

    def sync_file(self, node: Node) -> list[tuple[int, int]]:
        """An fsync: its contents are durable now. Returns the ranges the caller must copy to
        the durable copy (which it then cuts or extends to the file's size)."""
        ranges = merged(node.dirty)
        node.dirty.clear()
        node.synced = True
        return ranges

    def sync_directory(self, node: Node) -> None:
        node.durable_entries = dict(node.entries)

    def rename(self, old: str | PurePosixPath, new: str | PurePosixPath) -> None:
        """``rename(old, new)`` done: what ``new`` named before is unnamed."""
        old_parent, old_name = self._parent(old)
        new_parent, new_name = self._parent(new)
        moving = old_parent.entries[old_name]
        if new_parent.entries.get(new_name) is moving:
            return  # two names of one file: POSIX says rename does nothing
        del old_parent.entries[old_name]
        new_parent.entries[new_name] = moving

    def remove(self, path: str | PurePosixPath) -> None:
        """``unlink`` or ``rmdir`` done."""
        parent, name = self._parent(path)
        del parent.entries[name]

    def _parent(self, path: str | PurePosixPath) -> tuple[Node, str]:
        *above, name = _parts(path)
        return self.node(PurePosixPath(*above)) if above else self.root, name


def _walk(
    directory: Node, path: PurePosixPath, *, durable: bool, above: frozenset[int] = frozenset()
) -> Iterator[Survivor]:
    """The names below ``directory``. Directories renamed in and out of each other while
    unsynced can make the durable entries a cycle: a directory already on the way down
    (``above``) is passed over there."""
    above = above | {directory.number}
    entries = directory.durable_entries if durable else directory.entries
    for name, node in sorted(entries.items()):
        if node.number in above:
            continue
        yield Survivor(path / name, node)
        if node.kind is Kind.DIRECTORY:
            yield from _walk(node, path / name, durable=durable, above=above)
