"""dcmtk's command-line tools as test peers: the senders (echoscu, storescu, dcmsend); the
receiver, storescp, is :mod:`tests.support.storescp`.

Always by their full Debian path: pynetdicom installs scripts of the same names into the virtual
environment, which shadow dcmtk's when the environment is on ``PATH``. Every tool runs with
``TCP_NODELAY=1`` in its environment (dcmtk reads it): with Nagle's algorithm on both ends, a
C-STORE round trip waits for delayed ACKs and 300 small instances take 26 s instead of 0.15 s.

Quirks of dcmtk 3.6.7 that this module absorbs:

* echoscu and storescu print an association rejection at the default log level, on stderr::

      F: Association Rejected:
      F: Result: Rejected Permanent, Source: Service User
      F: Reason: Calling AE Title Not Recognized

  dcmsend prints only ``F: cannot negotiate network association: DUL Association Rejected``
  (exit code 61) unless run with ``-d``, which adds the same three lines with ``D:`` prefixes;
  :func:`dcmsend` therefore always passes ``-d``.
* dcmsend exits with 0 when the peer accepted no presentation context for its only file
  ("E: No Acceptable Presentation Contexts"): nothing was sent. :attr:`DcmtkResult.ok` also
  requires that no ``E:``/``F:`` line was logged.
* Neither storescu nor dcmsend can send HTJ2K or an unknown transfer syntax: they propose it
  ("W: transfer syntax is unknown, trying to propose only this one") and then fail with
  misleading errors ("File meta information header missing", "unable to convert dataset from
  'Little Endian Explicit' transfer syntax to 'Little Endian Explicit'"), even when the peer
  accepted it. Send those with pynetdicom in raw mode.
* dcmsend proposes a file's own transfer syntax and the uncompressed ones; for an uncompressed
  file the receiver's preference wins, so an implicit VR file may go out as explicit VR.
* storescu proposes one compressed transfer syntax, chosen by a ``-x..`` option, plus the
  uncompressed ones; :func:`storescu` picks the option from the files when it is not given.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from pydicom.filereader import read_file_meta_info

#: Where Debian installs dcmtk's tools.
DCMTK_BIN = Path("/usr/bin")

#: dcmtk's own words for the A-ASSOCIATE-RJ fields (PS3.8 9.3.4), as printed by its tools.
_RESULTS = {"Rejected Permanent": 1, "Rejected Transient": 2}
_SOURCES = {
    "Service User": 1,
    "Service Provider (ACSE Related)": 2,
    "Service Provider (Presentation Related)": 3,
}
_REASONS = {
    (1, "No Reason"): 1,
    (1, "App Context Name Not Supported"): 2,
    (1, "Calling AE Title Not Recognized"): 3,
    (1, "Called AE Title Not Recognized"): 7,
    (2, "No Reason"): 1,
    (2, "Protocol Version Not Supported"): 2,
    (3, "Temporary Congestion"): 1,
    (3, "Local Limit Exceeded"): 2,
}
_REJECTION = re.compile(
    r"^[FD]: Result: (?P<result>[^,]+), Source: (?P<source>.+)\n[FD]: Reason: (?P<reason>.+)$",
    re.MULTILINE,
)

#: storescu's proposal option for each compressed transfer syntax it can send.
STORESCU_PROPOSAL_OPTIONS = {
    "1.2.840.10008.1.2.1.99": "-xd",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50": "-xy",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": "-xx",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG Lossless, SV1
    "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "-xu",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "-xw",  # JPEG 2000
    "1.2.840.10008.1.2.5": "-xr",  # RLE Lossless
}
_UNCOMPRESSED = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})


class Rejection(NamedTuple):
    """An A-ASSOCIATE-RJ as numbers (PS3.8 9.3.4); compares equal to ``(1, 1, 3)`` and such."""

    result: int
    source: int
    reason: int


@dataclass(frozen=True)
class DcmtkResult:
    """How a dcmtk tool ended."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        """The tool's error and fatal log lines (``E: ...``, ``F: ...``)."""
        return [
            line
            for line in (self.stdout + "\n" + self.stderr).splitlines()
            if line.startswith(("E: ", "F: "))
        ]

    @property
    def ok(self) -> bool:
        """Exit code 0 and no error logged: dcmsend exits 0 even when nothing could be sent."""
        return self.returncode == 0 and not self.errors

    @property
    def rejection(self) -> Rejection | None:
        """The association rejection the tool reported, if any (see the module notes)."""
        return parse_rejection(self.stdout + "\n" + self.stderr)

    def check(self) -> DcmtkResult:
        """Return self if the tool succeeded, else fail the test with its output."""
        if not self.ok:
            raise AssertionError(f"dcmtk tool failed:\n{self}")
        return self

    def __str__(self) -> str:
        return (
            f"$ {' '.join(self.args)}\nexit code {self.returncode}\n"
            f"--- stdout (tail)\n{_tail(self.stdout)}\n--- stderr (tail)\n{_tail(self.stderr)}"
        )


def parse_rejection(output: str) -> Rejection | None:
    """Find dcmtk's "Result: ..., Source: ... / Reason: ..." lines; None if there are none.

    Raises :class:`ValueError` for words this module does not know, rather than guessing.
    """
    match = _REJECTION.search(output)
    if match is None:
        return None
    try:
        result = _RESULTS[match["result"]]
        source = _SOURCES[match["source"]]
        reason = _REASONS[source, match["reason"]]
    except KeyError as exc:
        raise ValueError(f"unknown rejection wording in dcmtk output: {match[0]!r}") from exc
    return Rejection(result, source, reason)


def dcmtk_environment(*, nodelay: bool = True) -> dict[str, str]:
    """The environment of every dcmtk process: ``TCP_NODELAY=1`` (see the module docstring).

    Without ``nodelay``, dcmtk's defaults (Nagle's algorithm on), as many senders in the field
    run it: the benchmark's Nagle rows.
    """
    if nodelay:
        return {**os.environ, "TCP_NODELAY": "1"}
    return {name: value for name, value in os.environ.items() if name != "TCP_NODELAY"}


def run_tool(
    tool: str, args: Sequence[str], timeout: float, bin_dir: Path = DCMTK_BIN
) -> DcmtkResult:
    """Run ``<bin_dir>/<tool> args...`` (``/usr/bin``, Debian's dcmtk, unless another is
    given); fail the test (with the output so far) on a timeout."""
    command = (str(bin_dir / tool), *args)
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=dcmtk_environment(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        raise AssertionError(
            f"{' '.join(command)} did not finish within {timeout:g} s\n{_tail(output)}"
        ) from exc
    return DcmtkResult(command, completed.returncode, completed.stdout, completed.stderr)


def echoscu(
    host: str,
    port: int,
    called_ae: str = "ANY-SCP",
    calling_ae: str = "ECHOSCU",
    *,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
    bin_dir: Path = DCMTK_BIN,
) -> DcmtkResult:
    """One C-ECHO in one association."""
    args = ("-aet", calling_ae, "-aec", called_ae, *extra_args, host, str(port))
    return run_tool("echoscu", args, timeout, bin_dir)


def storescu(
    host: str,
    port: int,
    files: Sequence[Path],
    called_ae: str = "ANY-SCP",
    calling_ae: str = "STORESCU",
    *,
    extra_args: Sequence[str] = (),
    timeout: float = 120.0,
) -> DcmtkResult:
    """Send ``files`` in one association with storescu (``-R``: only the contexts needed).

    Without a ``-x..`` option in ``extra_args`` the proposal option is chosen from the files'
    transfer syntaxes; files in two different compressed syntaxes need :func:`dcmsend`.
    """
    proposal: tuple[str, ...] = ()
    if not any(arg.startswith("-x") for arg in extra_args):
        proposal = storescu_proposal(files)
    args = (
        "-R",
        *proposal,
        "-aet",
        calling_ae,
        "-aec",
        called_ae,
        *extra_args,
        host,
        str(port),
        *(str(f) for f in files),
    )
    return run_tool("storescu", args, timeout)


def storescu_proposal(files: Sequence[Path]) -> tuple[str, ...]:
    """The storescu ``-x..`` option that lets it send ``files`` without converting them."""
    compressed = {
        str(read_file_meta_info(path).TransferSyntaxUID) for path in files
    } - _UNCOMPRESSED
    if not compressed:
        return ()
    if len(compressed) > 1:
        raise ValueError(
            f"storescu proposes one compressed transfer syntax, these files use "
            f"{sorted(compressed)}: use dcmsend"
        )
    (syntax,) = compressed
    if syntax not in STORESCU_PROPOSAL_OPTIONS:
        raise ValueError(f"storescu cannot send transfer syntax {syntax}")
    return (STORESCU_PROPOSAL_OPTIONS[syntax],)


def dcmsend(
    host: str,
    port: int,
    files: Sequence[Path],
    called_ae: str = "ANY-SCP",
    calling_ae: str = "DCMSEND",
    *,
    extra_args: Sequence[str] = (),
    timeout: float = 120.0,
) -> DcmtkResult:
    """Send ``files`` with dcmsend, each in its own transfer syntax.

    ``-nuc`` accepts unknown SOP classes, ``-dn`` never decompresses, and ``-d`` is needed for
    dcmsend to print why an association was rejected. dcmsend opens further associations on
    its own when the files need more than 128 presentation contexts.
    """
    args = (
        "-d",
        "-nuc",
        "-dn",
        "-aet",
        calling_ae,
        "-aec",
        called_ae,
        *extra_args,
        host,
        str(port),
        *(str(f) for f in files),
    )
    return run_tool("dcmsend", args, timeout)


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
