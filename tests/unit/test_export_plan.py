"""Presentation-context planning for export, as tables."""

from __future__ import annotations

import pytest

from export.plan import InstanceMeta, batches, opening_contexts, passes, rejection_is_transient

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT = "1.2.840.10008.1.2.1"
J2K = "1.2.840.10008.1.2.4.90"
PRIVATE = "1.2.826.0.1.3680043.9999.2.1"


def instance(sop_class: str, syntax: str, n: int) -> InstanceMeta:
    return InstanceMeta(f"k{n}", sop_class, f"1.2.3.{n}", syntax)


def shape(groups: list[list[InstanceMeta]]) -> list[list[str]]:
    return [[i.object_key for i in group] for group in groups]


@pytest.mark.parametrize(
    ("pairs", "limit", "expected"),
    [
        pytest.param([(CT, EXPLICIT)] * 3, 128, [["k0", "k1", "k2"]], id="one-association"),
        pytest.param(
            [(CT, EXPLICIT), (CT, J2K), (MR, J2K)], 128, [["k0", "k1", "k2"]], id="mixed-known"
        ),
        pytest.param(
            [(CT, EXPLICIT), (MR, J2K), (CT, J2K)], 2, [["k0", "k1"], ["k2"]], id="split-at-limit"
        ),
        pytest.param(
            [(CT, EXPLICIT), (MR, J2K), (CT, EXPLICIT)],
            2,
            [["k0", "k1", "k2"]],
            id="known-context-fits",
        ),
        pytest.param(
            [(CT, EXPLICIT), (CT, PRIVATE)], 128, [["k0"], ["k1"]], id="private-beside-standard"
        ),
        pytest.param(
            [(CT, PRIVATE), (MR, EXPLICIT), (CT, PRIVATE)],
            128,
            [["k0", "k1", "k2"]],
            id="private-alone-is-fine",
        ),
        pytest.param([], 128, [], id="nothing"),
    ],
)
def test_batches(pairs: list[tuple[str, str]], limit: int, expected: list[list[str]]) -> None:
    instances = [instance(sop, syntax, n) for n, (sop, syntax) in enumerate(pairs)]
    assert shape(batches(instances, limit)) == expected


def test_129_contexts_need_two_associations() -> None:
    instances = [instance(f"1.2.840.10008.5.1.4.1.1.{n}", EXPLICIT, n) for n in range(129)]
    assert [len(group) for group in batches(instances)] == [128, 1]


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        pytest.param([(CT, EXPLICIT)] * 3, [(CT, EXPLICIT)], id="one-context"),
        pytest.param(
            [(CT, EXPLICIT), (MR, J2K), (CT, EXPLICIT)],
            [(CT, EXPLICIT), (MR, J2K)],
            id="in-order-of-first-use",
        ),
        pytest.param(
            [(CT, PRIVATE), (CT, EXPLICIT), (MR, J2K)],
            [(CT, PRIVATE), (MR, J2K)],
            id="first-batch-only",
        ),
        pytest.param([], [], id="nothing-readable"),
    ],
)
def test_opening_contexts(pairs: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    first = [instance(sop, syntax, n) for n, (sop, syntax) in enumerate(pairs)]
    assert opening_contexts(first) == expected


@pytest.mark.parametrize(
    ("keys", "known", "expected"),
    [
        pytest.param(["k0", "k1"], {}, [(["k0", "k1"], None)], id="nothing-known"),
        pytest.param(
            ["k0", "k1"],
            {"k0": (CT, EXPLICIT), "k1": (CT, EXPLICIT)},
            [(["k0", "k1"], [(CT, EXPLICIT)])],
            id="all-known",
        ),
        pytest.param(
            ["k0", "k1", "k2", "k3"],
            {"k1": (CT, EXPLICIT), "k3": (CT, PRIVATE)},
            [(["k1"], [(CT, EXPLICIT)]), (["k3"], [(CT, PRIVATE)]), (["k0", "k2"], None)],
            id="known-batches-first-then-the-rest",
        ),
        pytest.param([], {}, [], id="nothing"),
    ],
)
def test_passes(
    keys: list[str],
    known: dict[str, tuple[str, str]],
    expected: list[tuple[list[str], list[tuple[str, str]] | None]],
) -> None:
    metas = {
        key: InstanceMeta(key, sop, f"1.2.3.{key}", syntax) for key, (sop, syntax) in known.items()
    }
    assert passes(keys, metas) == expected


@pytest.mark.parametrize(
    ("lengths", "expected"),
    [
        pytest.param(
            {"k0": 11, "k1": 10, "k2": 13, "k3": 12},
            [(["k1", "k3"], [(CT, EXPLICIT)]), (["k2"], None), (["k0"], [(CT, EXPLICIT)])],
            id="odd-ones-alone-and-last",
        ),
        pytest.param(
            {"k0": None, "k1": 10},
            [(["k0", "k1"], [(CT, EXPLICIT)])],
            id="no-length-is-not-odd",
        ),
    ],
)
def test_odd_length_data_sets_go_alone_after_the_rest(
    lengths: dict[str, int | None],
    expected: list[tuple[list[str], list[tuple[str, str]] | None]],
) -> None:
    metas = {
        key: InstanceMeta(key, CT, f"1.2.3.{n}", EXPLICIT, data_set_length=length)
        for n, (key, length) in enumerate(lengths.items())
    }
    # k2's file meta is not known yet: it goes with the pass that learns it, before the odd.
    known = {key: meta for key, meta in metas.items() if key != "k2"} if "k2" in metas else metas
    assert passes(list(lengths), known) == expected


@pytest.mark.parametrize(("result", "transient"), [(1, False), (2, True)])
def test_only_transient_rejections_are_retried(result: int, transient: bool) -> None:
    assert rejection_is_transient(result) is transient
