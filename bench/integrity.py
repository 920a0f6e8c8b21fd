"""Did every instance arrive, byte for byte?

What is compared is the data set: the bytes after the Part 10 file meta information. That is
what travels over the wire; each receiver writes a file meta header of its own in front of it
(storescp ``+B`` its own, the gateway ours with the negotiated transfer syntax). The digest of a
data set is :func:`tests.support.factories.dataset_digest`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """What a receiver ended up with, compared with what was sent."""

    expected: int
    received: int
    missing: int
    altered: int
    unexpected: int
    duplicates: int

    @property
    def ok(self) -> bool:
        return self.missing == self.altered == self.unexpected == self.duplicates == 0

    def describe(self) -> str:
        if self.ok:
            return f"ok ({self.received}/{self.expected})"
        problems = [
            f"{count} {what}"
            for count, what in (
                (self.missing, "missing"),
                (self.altered, "altered"),
                (self.unexpected, "unexpected"),
                (self.duplicates, "duplicated"),
            )
            if count
        ]
        return "FAILED: " + ", ".join(problems)


def compare(expected: Mapping[str, str], received: Iterable[tuple[str, str]]) -> Verdict:
    """``expected`` maps SOP Instance UID to data set digest; ``received`` is (UID, digest)
    for everything the receiver holds."""
    arrived = list(received)
    counts = Counter(uid for uid, _ in arrived)
    digests = dict(arrived)
    return Verdict(
        expected=len(expected),
        received=len(arrived),
        missing=sum(1 for uid in expected if uid not in digests),
        altered=sum(1 for uid, digest in expected.items() if digests.get(uid, digest) != digest),
        unexpected=sum(1 for uid in digests if uid not in expected),
        duplicates=sum(count - 1 for count in counts.values()),
    )
