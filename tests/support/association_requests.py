"""A-ASSOCIATE-RQs of any size, encoded with ``struct`` (pynetdicom's encoder takes seconds for
the 8 MB ones), and a raw exchange that returns whatever the service answers."""

from __future__ import annotations

import contextlib
import socket
import struct

IMPLICIT_VR_LITTLE_ENDIAN = b"1.2.840.10008.1.2"
_APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
#: Presentation context IDs are odd, 1-255.
_CONTEXT_IDS = range(1, 256, 2)


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def storage_sop_class(n: int) -> str:
    """The SOP class of the ``n``-th context (from 0) of :func:`association_request`."""
    return f"1.2.840.10008.5.1.4.1.1.{n + 1}"


def role_selection(sop_class: str, scu: bool, scp: bool) -> bytes:
    """An SCP/SCU Role Selection sub-item (PS3.7 D.3.3.4) with any roles, (0, 0) included,
    which pynetdicom refuses to encode."""
    uid = sop_class.encode()
    return _item(0x54, struct.pack(">H", len(uid)) + uid + bytes([scu, scp]))


def association_request(
    called: str,
    calling: str,
    contexts: int,
    transfer_syntaxes: int = 1,
    user_items: bytes = b"",
) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing ``contexts`` storage SOP classes (made-up ones, under the
    DICOM root: :func:`storage_sop_class`; the IDs start again at 1 after 255), each with
    implicit VR little endian and ``transfer_syntaxes - 1`` made-up transfer syntaxes after it;
    ``user_items`` are encoded sub-items added to its user information.

    128 contexts of 2,201 transfer syntaxes is issue 17's 8 MB request.
    """
    syntaxes = _item(0x40, IMPLICIT_VR_LITTLE_ENDIAN) + b"".join(
        _item(0x40, f"1.2.840.10008.1.2.4.{1000 + n}".encode())
        for n in range(transfer_syntaxes - 1)
    )
    proposed = b"".join(
        _item(
            0x20,
            struct.pack(">BBBB", _CONTEXT_IDS[n % len(_CONTEXT_IDS)], 0, 0, 0)
            + _item(0x30, storage_sop_class(n).encode())
            + syntaxes,
        )
        for n in range(contexts)
    )
    user = _item(0x50, _item(0x51, struct.pack(">I", 65536)) + _item(0x52, b"1.2.3.4") + user_items)
    body = (
        struct.pack(">HH", 1, 0)
        + called.encode().ljust(16)
        + calling.encode().ljust(16)
        + bytes(32)
        + _item(0x10, _APPLICATION_CONTEXT)
        + proposed
        + user
    )
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def first_answer(host: str, port: int, data: bytes, timeout: float) -> bytes:
    """Send ``data`` (all of it, as a sender writes its request before it reads), then return
    the first PDU the service answers with (what came, if it closed the connection first)."""
    answer = b""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            while not _whole_pdu(answer) and (chunk := sock.recv(65536)):
                answer += chunk
    return answer


def _whole_pdu(data: bytes) -> bool:
    return len(data) >= 6 and len(data) >= 6 + struct.unpack_from(">I", data, 2)[0]
