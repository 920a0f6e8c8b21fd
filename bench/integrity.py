"""Did every instance arrive, byte for byte?

What is compared is the data set: the bytes after the Part 10 file meta information. That is
what travels over the wire; each receiver writes a file meta header of its own in front of it
(storescp ``+B`` its own, the gateway ours with the negotiated transfer syntax).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

_PREAMBLE_AND_GROUP_LENGTH = 144
_READ_SIZE = 1024 * 1024


class NotPart10(ValueError):
    """The bytes do not start with a Part 10 preamble, ``DICM`` and a file meta group length."""


def dataset_digest(stream: BinaryIO) -> tuple[str, int]:
    """SHA-256 (hex) and length of the data set of the Part 10 file read from ``stream``."""
    head = _read_exactly(stream, _PREAMBLE_AND_GROUP_LENGTH)
    if head[128:132] != b"DICM":
        raise NotPart10("no DICM prefix at offset 128")
    # (0002,0000) UL in explicit VR little endian: tag (4), VR (2), length (2), value (4).
    if head[132:138] != b"\x02\x00\x00\x00UL":
        raise NotPart10("the file meta information does not start with its group length")
    _read_exactly(stream, int.from_bytes(head[140:144], "little"))
    digest = hashlib.sha256()
    length = 0
    while chunk := stream.read(_READ_SIZE):
        digest.update(chunk)
        length += len(chunk)
    return digest.hexdigest(), length


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise NotPart10(f"ends after {len(data)} of {size} bytes")
    return data


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
