"""The power-loss file system's rules as plain bookkeeping: which names and contents a cut
keeps (tests/support/power_loss_model.py; the same rules on a real mount are in
test_power_loss_fs.py)."""

from __future__ import annotations

import pytest

from tests.support.power_loss_model import DurableTree, Kind, Losses, merged


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        ([], []),
        ([(0, 0)], []),
        ([(5, 9), (0, 3)], [(0, 3), (5, 9)]),
        ([(0, 4), (4, 8)], [(0, 8)]),
        ([(0, 6), (2, 4)], [(0, 6)]),
        ([(3, 7), (0, 4), (10, 12), (11, 20)], [(0, 7), (10, 20)]),
    ],
)
def test_changed_ranges_are_joined(
    ranges: list[tuple[int, int]], expected: list[tuple[int, int]]
) -> None:
    assert merged(ranges) == expected


def run(tree: DurableTree, steps: str) -> None:
    """Steps separated by ``;``: ``new P`` (a file, 10 bytes written), ``mkdir P``,
    ``sync P`` (a file), ``syncdir P``, ``mv P Q``, ``rm P``."""
    for step in steps.split(";"):
        verb, *paths = step.split()
        match verb:
            case "new":
                tree.written(tree.create(paths[0], Kind.FILE), 0, 10)
            case "mkdir":
                tree.create(paths[0], Kind.DIRECTORY)
            case "sync":
                tree.sync_file(tree.node(paths[0]))
            case "syncdir":
                tree.sync_directory(tree.node(paths[0]))
            case "mv":
                tree.rename(paths[0], paths[1])
            case "rm":
                tree.remove(paths[0])


#: What a cut keeps under a name: a directory, a file with its synced contents, an empty file.
DIR, SYNCED, EMPTY = "directory", "synced", "empty"
#: Two directories, a synced file in the first, all of it synced, then the file moved over.
MOVED_ACROSS = (
    "mkdir /x; mkdir /y; new /x/f; sync /x/f; syncdir /x; syncdir /y; syncdir /; mv /x/f /y/f"
)

SCENARIOS = [
    # (what happened, the steps, what a cut keeps)
    ("new file, nothing synced", "new /a", {}),
    ("new file synced, its directory not", "new /a; sync /a", {}),
    ("new file and its directory synced", "new /a; sync /a; syncdir /", {"a": SYNCED}),
    ("name synced, contents not", "new /a; syncdir /", {"a": EMPTY}),
    ("rename not synced", "new /a; sync /a; syncdir /; mv /a /b", {"a": SYNCED}),
    ("rename synced", "new /a; sync /a; syncdir /; mv /a /b; syncdir /", {"b": SYNCED}),
    ("unlink not synced", "new /a; sync /a; syncdir /; rm /a", {"a": SYNCED}),
    ("unlink synced", "new /a; sync /a; syncdir /; rm /a; syncdir /", {}),
    (
        "new directory synced inside, not in its parent",
        "mkdir /d; new /d/f; sync /d/f; syncdir /d",
        {},
    ),
    (
        "new directory synced in its parent only",
        "mkdir /d; new /d/f; sync /d/f; syncdir /",
        {"d": DIR},
    ),
    (
        "new directory synced in its parent and inside",
        "mkdir /d; new /d/f; sync /d/f; syncdir /d; syncdir /",
        {"d": DIR, "d/f": SYNCED},
    ),
    (
        "rename across directories, neither synced",
        MOVED_ACROSS,
        {"x": DIR, "y": DIR, "x/f": SYNCED},
    ),
    (
        "rename across directories, the target synced: under both names",
        f"{MOVED_ACROSS}; syncdir /y",
        {"x": DIR, "y": DIR, "x/f": SYNCED, "y/f": SYNCED},
    ),
    (
        "rename across directories, the source synced: under neither",
        f"{MOVED_ACROSS}; syncdir /x",
        {"x": DIR, "y": DIR},
    ),
    (
        "rename across directories, both synced",
        f"{MOVED_ACROSS}; syncdir /x; syncdir /y",
        {"x": DIR, "y": DIR, "y/f": SYNCED},
    ),
    (
        "directories moved into each other, unsynced in between: no loop",
        "mkdir /a; mkdir /a/b; syncdir /a; syncdir /; mv /a/b /b; syncdir /; mv /a /b/a;"
        " syncdir /b; syncdir /",
        # / holds b, b holds a, and a still holds b (not synced since b left): b/a/b is not
        # walked into again.
        {"b": DIR, "b/a": DIR},
    ),
]


@pytest.mark.parametrize(
    ("steps", "kept"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_a_cut_keeps_what_was_synced(steps: str, kept: dict[str, str]) -> None:
    tree = DurableTree()
    run(tree, steps)
    assert {
        str(s.path): DIR if s.node.kind is Kind.DIRECTORY else SYNCED if s.node.synced else EMPTY
        for s in tree.survivors()
    } == kept


def test_everything_there_at_the_start_is_durable() -> None:
    tree = DurableTree()
    tree.existing("d", Kind.DIRECTORY)
    tree.existing("d/f", Kind.FILE)
    tree.remove("/d/f")
    tree.create("/d/g", Kind.FILE)
    assert [(str(s.path), s.node.synced) for s in tree.survivors()] == [
        ("d", True),
        ("d/f", True),
    ]
    assert tree.losses() == Losses(names_lost=1, names_back=1, files_rolled_back=0)


def test_a_rename_over_a_file_brings_the_replaced_file_back() -> None:
    """POSIX's promise, not ext4's auto_da_alloc: the new name is not durable before the
    directory's fsync, whatever was synced."""
    tree = DurableTree()
    run(tree, "new /old; sync /old; syncdir /")
    replaced = tree.node("/old")
    run(tree, "new /new; sync /new; mv /new /old")
    ((survivor,),) = [tree.survivors()]
    assert (str(survivor.path), survivor.node) == ("old", replaced)
    assert tree.losses() == Losses(names_lost=1, names_back=1, files_rolled_back=0)


def test_changes_since_the_last_sync_are_counted_as_rolled_back() -> None:
    tree = DurableTree()
    run(tree, "new /a; sync /a; syncdir /")
    tree.resized(tree.node("/a"), 10, 4)
    assert tree.losses() == Losses(names_lost=0, names_back=0, files_rolled_back=1)
    assert tree.sync_file(tree.node("/a")) == [(4, 10)]
    assert tree.losses() == Losses(names_lost=0, names_back=0, files_rolled_back=0)
