"""Reading a deflated data set (*Deflated Explicit VR Little Endian*) without inflating it whole.

Both the identity (:func:`ingest.part10.read_identity`) and the check that the encoding can be
followed to its end (:func:`ingest.well_formed.check_well_formed`) read a deflated data set
through :class:`Inflating`, so that a large deflated instance costs no more memory than a small
one.
"""

from __future__ import annotations

import zlib
from io import RawIOBase
from typing import BinaryIO


class Inflating(RawIOBase):
    """A reader that inflates a deflated data set as it is read.

    Only as much as the identifying attributes need is ever inflated, and at most about two
    ``_WINDOW`` of it is held: skipping a large element inflates and drops it piece by piece.
    pydicom peeks a few bytes ahead and seeks back, so the last ``_WINDOW`` inflated bytes
    before the current position are kept for short backward seeks.
    """

    _WINDOW = 1024 * 1024
    _STEP = 256 * 1024

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._unconsumed = b""
        self._window = b""  # inflated bytes from offset ``_window_start``
        self._window_start = 0
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def _inflate_to(self, end: int, keep_from: int) -> None:
        """Inflate up to offset ``end``, keeping nothing before ``keep_from``."""
        while self._window_start + len(self._window) < end and not self._inflater.eof:
            source_ended = False
            if not self._unconsumed:
                self._unconsumed = self._source.read(65536)
                source_ended = not self._unconsumed
            inflated = self._inflater.decompress(self._unconsumed, self._STEP)
            self._unconsumed = self._inflater.unconsumed_tail
            # With all input taken, zlib may still hold output that the size limit kept back
            # (the end of a long run of zeros): only an empty answer then means the end.
            if source_ended and not inflated:
                break
            self._window += inflated
            self._trim(keep_from)
        self._trim(keep_from)

    def _trim(self, keep_from: int) -> None:
        excess = min(keep_from - self._window_start, len(self._window))
        if excess > 0:
            self._window = self._window[excess:]
            self._window_start += excess

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise OSError("unbounded reads of a deflated stream are not supported")
        self._inflate_to(self._position + size, keep_from=self._position - self._WINDOW)
        start = self._position - self._window_start
        data = self._window[start : start + size]
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self._position + offset
        if target < self._window_start:
            raise OSError("cannot seek that far back in a deflated stream")
        self._inflate_to(target, keep_from=target - self._WINDOW)
        self._position = min(target, self._window_start + len(self._window))
        return self._position
