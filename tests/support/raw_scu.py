"""A minimal asyncio DICOM SCU: associate, C-STORE, C-ECHO, release, in one coroutine each.

Hundreds of pynetdicom requestors in one test process would need two threads each and poll;
these share one event loop thread, so a test can open 1,000 associations at once. PDUs are
encoded with pynetdicom's own classes; only the answers are read here, as far as a test needs
them (the A-ASSOCIATE-AC's accepted contexts, a response's status).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context
from pynetdicom.transport import AddressInformation

from gateway.dicom_status import VERIFICATION_SOP_CLASS

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
_MAX_PDU = 65_536
_STATUS_TAG = (0x0000, 0x0900)
_A_ASSOCIATE_AC, _A_ASSOCIATE_RJ, P_DATA_TF_TYPE = 0x02, 0x03, 0x04
_A_RELEASE_RQ, _A_RELEASE_RP, _A_ABORT = 0x05, 0x06, 0x07


class Rejected(Exception):
    """The association was rejected: (result, source, reason) of the A-ASSOCIATE-RJ."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        super().__init__(f"A-ASSOCIATE-RJ {result}/{source}/{reason}")
        self.rejection = (result, source, reason)


class Aborted(Exception):
    """The peer aborted or closed the connection."""


@dataclass(frozen=True)
class DataSet:
    """An instance to send: its UIDs and its data set in implicit VR little endian."""

    sop_class_uid: str
    sop_instance_uid: str
    encoded: bytes


class RawAssociation:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._message_id = 0
        self.contexts: dict[str, int] = {}

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        called: str,
        calling: str,
        sop_classes: Sequence[str] = (VERIFICATION_SOP_CLASS,),
    ) -> RawAssociation:
        """Connect and associate; raises :class:`Rejected` or :class:`Aborted`."""
        reader, writer = await asyncio.open_connection(host, port)
        association = cls(reader, writer)
        try:
            writer.write(association_request(called, calling, sop_classes, port))
            association.contexts = _accepted_contexts(await association._read_pdu(), sop_classes)
        except BaseException:
            writer.close()
            raise
        return association

    async def echo(self) -> int:
        primitive = C_ECHO()
        primitive.MessageID = self._next_id()
        primitive.AffectedSOPClassUID = VERIFICATION_SOP_CLASS
        message = C_ECHO_RQ()
        message.primitive_to_message(primitive)
        return await self._request(message, self.contexts[VERIFICATION_SOP_CLASS])

    async def store(self, data_set: DataSet) -> int:
        primitive = C_STORE()
        primitive.MessageID = self._next_id()
        primitive.AffectedSOPClassUID = data_set.sop_class_uid
        primitive.AffectedSOPInstanceUID = data_set.sop_instance_uid
        primitive.Priority = 2
        primitive.DataSet = BytesIO(data_set.encoded)
        message = C_STORE_RQ()
        message.primitive_to_message(primitive)
        return await self._request(message, self.contexts[data_set.sop_class_uid])

    async def send_store_command(self, sop_class_uid: str, sop_instance_uid: str) -> int:
        """Send a C-STORE-RQ's command set alone; its data set is to follow in
        :meth:`send_data_set_fragment`, as slowly or as endlessly as a test likes, and its
        answer is read with :meth:`response_status`. Returns the context to send it on."""
        primitive = C_STORE()
        primitive.MessageID = self._next_id()
        primitive.AffectedSOPClassUID = sop_class_uid
        primitive.AffectedSOPInstanceUID = sop_instance_uid
        primitive.Priority = 2
        primitive.DataSet = BytesIO()  # says that a data set follows
        message = C_STORE_RQ()
        message.primitive_to_message(primitive)
        context_id = self.contexts[sop_class_uid]
        for p_data in message.encode_msg(context_id, _MAX_PDU):
            ((_, value),) = p_data.presentation_data_value_list
            pdu = P_DATA_TF()
            pdu.from_primitive(p_data)
            self._writer.write(pdu.encode())
            if value[0] & 0x03 == 0x03:  # the command's last fragment; the data set is ours
                break
        await self._writer.drain()
        return context_id

    async def send_data_set_fragment(self, context_id: int, fragment: bytes, *, last: bool) -> None:
        """One P-DATA-TF holding one data set fragment of the C-STORE begun last."""
        control = 0x02 if last else 0x00
        item = struct.pack(">IBB", 2 + len(fragment), context_id, control) + fragment
        self._writer.write(struct.pack(">BBI", P_DATA_TF_TYPE, 0, len(item)) + item)
        await self._writer.drain()

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are, for PDUs no well-behaved sender would write."""
        self._writer.write(data)
        await self._writer.drain()

    async def response_status(self) -> int:
        """The status of the next response; raises :class:`Aborted` if an abort or the
        connection's end comes instead."""
        return await self._response_status()

    async def release(self) -> None:
        self._writer.write(struct.pack(">BBII", _A_RELEASE_RQ, 0, 4, 0))
        pdu_type, _ = await self._read_pdu()
        if pdu_type != _A_RELEASE_RP:
            raise Aborted(f"PDU type {pdu_type:#04x} instead of an A-RELEASE-RP")
        await self.close()

    async def abort(self) -> None:
        self._writer.write(struct.pack(">BBIBBBB", _A_ABORT, 0, 4, 0, 0, 0, 0))
        await self.close()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):  # the peer reset it first: closed either way
            await self._writer.wait_closed()

    def _next_id(self) -> int:
        self._message_id += 1
        return self._message_id

    async def _request(self, message: C_ECHO_RQ | C_STORE_RQ, context_id: int) -> int:
        for p_data in message.encode_msg(context_id, _MAX_PDU):
            pdu = P_DATA_TF()
            pdu.from_primitive(p_data)
            self._writer.write(pdu.encode())
        await self._writer.drain()
        return await self._response_status()

    async def _response_status(self) -> int:
        command = b""
        while True:
            pdu_type, body = await self._read_pdu()
            if pdu_type != P_DATA_TF_TYPE:
                raise Aborted(f"PDU type {pdu_type:#04x} while waiting for a response")
            offset = 0
            while offset < len(body):
                (length,) = struct.unpack_from(">I", body, offset)
                header = body[offset + 5]
                command += body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                if header & 0x01 and header & 0x02:  # the command's last fragment
                    return _status(command)

    async def _read_pdu(self) -> tuple[int, bytes]:
        try:
            header = await self._reader.readexactly(6)
            pdu_type, _, length = struct.unpack(">BBI", header)
            body = await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Aborted(f"connection ended: {exc}") from exc
        if pdu_type == _A_ABORT:
            raise Aborted("A-ABORT")
        return pdu_type, body


def association_request(called: str, calling: str, sop_classes: Sequence[str], port: int) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = _APPLICATION_CONTEXT
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 0)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", port)
    contexts = []
    for index, uid in enumerate(sop_classes):
        context = build_context(uid, [IMPLICIT_VR_LITTLE_ENDIAN])
        context.context_id = 2 * index + 1
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = _MAX_PDU
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.7433.1.1"
    primitive.user_information = [maximum, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _accepted_contexts(answer: tuple[int, bytes], sop_classes: Sequence[str]) -> dict[str, int]:
    """The accepted contexts of an A-ASSOCIATE-AC; raises :class:`Rejected` for an RJ."""
    pdu_type, body = answer
    if pdu_type == _A_ASSOCIATE_RJ:
        raise Rejected(body[1], body[2], body[3])
    if pdu_type != _A_ASSOCIATE_AC:
        raise Aborted(f"PDU type {pdu_type:#04x} instead of an A-ASSOCIATE-AC")
    accept = A_ASSOCIATE_AC()
    accept.decode(struct.pack(">BBI", _A_ASSOCIATE_AC, 0, len(body)) + body)
    accepted = {item.context_id for item in accept.presentation_context if item.result == 0}
    by_id = {2 * index + 1: uid for index, uid in enumerate(sop_classes)}
    return {by_id[context_id]: context_id for context_id in accepted if context_id in by_id}


def _status(command: bytes) -> int:
    """The Status (0000,0900) of an implicit VR little endian command set."""
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, offset)
        if (group, element) == _STATUS_TAG:
            return int(struct.unpack_from("<H", command, offset + 8)[0])
        offset += 8 + length
    raise Aborted("a response without a status")
