"""A pynetdicom Storage SCP in the test process, for what dcmtk's storescp cannot do as an
export destination: answer slowly or with chosen statuses, count C-STOREs, connections and
associations, and report how many associations were open at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from types import TracebackType
from typing import cast

from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import ThreadedAssociationServer

from gateway.dicom_status import VERIFICATION_SOP_CLASS
from gateway_client.testing import wait_until


@dataclass(frozen=True)
class ReceivedStore:
    """One C-STORE the scripted SCP answered."""

    association: int
    calling_ae_title: str
    message_id: int
    sop_instance_uid: str
    transfer_syntax_uid: str
    #: The data set bytes as they arrived (pynetdicom keeps them when it does not decode).
    data_set: bytes


class ScriptedScp:
    """A pynetdicom Storage SCP on ``127.0.0.1:port`` that records what happens to it.

    It accepts the given (SOP class, transfer syntaxes) contexts and Verification, waits
    ``store_delay`` seconds in every C-STORE before answering ``status`` (or the status
    ``statuses`` gives for the SOP Instance UID), records what arrived, and keeps count of
    TCP connections, established associations, the peak of associations open at once
    (from EVT_ESTABLISHED to EVT_RELEASED / EVT_ABORTED) and the peak of associations inside a
    C-STORE at once. ``require_calling_aet`` makes it reject other callers (permanent, 1/1/3);
    the C-STORE of an instance in ``abort_on`` is recorded and answered with an A-ABORT.
    """

    def __init__(
        self,
        contexts: Sequence[tuple[str, Sequence[str]]],
        *,
        ae_title: str = "SCRIPTED",
        port: int = 0,
        store_delay: float = 0.0,
        status: int = 0x0000,
        statuses: Mapping[str, int] | None = None,
        require_calling_aet: Sequence[str] = (),
        abort_on: Sequence[str] = (),
    ) -> None:
        #: The port it listens on; with 0 (the default), the one the system chose on entering.
        self.port = port
        self.ae_title = ae_title
        self.store_delay = store_delay
        self.status = status
        self.statuses = dict(statuses or {})
        self.abort_on = frozenset(abort_on)
        self._ae = AE(ae_title=ae_title)
        self._ae.maximum_associations = 20
        self._ae.network_timeout = 10
        self._ae.require_calling_aet = list(require_calling_aet)
        for sop_class, transfer_syntaxes in contexts:
            self._ae.add_supported_context(sop_class, list(transfer_syntaxes))
        self._ae.add_supported_context(VERIFICATION_SOP_CLASS)
        self._lock = threading.Lock()
        # Association objects are kept so that their ids are never reused by a later one.
        self._associations: list[object] = []
        self._open: set[int] = set()
        self._storing: set[int] = set()
        self._stores: list[ReceivedStore] = []
        self._established = 0
        self._released = 0
        self._aborted = 0
        self._connections = 0
        self.peak_open = 0
        self.peak_storing = 0
        self._server: ThreadedAssociationServer | None = None

    def __enter__(self) -> ScriptedScp:
        handlers: list[evt.EventHandlerType] = [
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_STORE, self._on_store),
        ]
        # The socket listens when start_server returns: nothing to wait for.
        server = self._ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        assert server is not None  # not blocking: the server is returned
        self._server = server
        self.port = int(server.server_address[1])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()

    @property
    def stores(self) -> list[ReceivedStore]:
        with self._lock:
            return list(self._stores)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    @property
    def associations(self) -> int:
        """Associations that were established (rejected ones are not)."""
        with self._lock:
            return self._established

    @property
    def endings(self) -> tuple[int, int]:
        """How many established associations ended (released, aborted)."""
        with self._lock:
            return self._released, self._aborted

    def wait_for_stores(self, count: int, timeout: float = 30.0) -> list[ReceivedStore]:
        wait_until(lambda: len(self.stores) >= count, timeout, f"{count} C-STORE(s) received")
        return self.stores

    def _on_connection(self, event: evt.Event) -> None:
        with self._lock:
            self._connections += 1

    def _on_established(self, event: evt.Event) -> None:
        with self._lock:
            self._established += 1
            self._associations.append(event.assoc)
            self._open.add(id(event.assoc))
            self.peak_open = max(self.peak_open, len(self._open))

    def _on_released(self, event: evt.Event) -> None:
        with self._lock:
            self._open.discard(id(event.assoc))
            self._released += 1

    def _on_aborted(self, event: evt.Event) -> None:
        with self._lock:
            self._open.discard(id(event.assoc))
            self._aborted += 1

    def _on_store(self, event: evt.Event) -> int:
        key = id(event.assoc)
        request = cast(C_STORE, event.request)
        sop_instance_uid = str(request.AffectedSOPInstanceUID)
        data_set = request.DataSet
        with self._lock:
            self._storing.add(key)
            self.peak_storing = max(self.peak_storing, len(self._storing))
        try:
            time.sleep(self.store_delay)  # the slow destination under test, not a readiness wait
        finally:
            with self._lock:
                self._storing.discard(key)
                self._stores.append(
                    ReceivedStore(
                        association=key,
                        calling_ae_title=str(event.assoc.requestor.ae_title),
                        message_id=int(request.MessageID or 0),
                        sop_instance_uid=sop_instance_uid,
                        transfer_syntax_uid=str(event.context.transfer_syntax),
                        data_set=data_set.getvalue() if isinstance(data_set, BytesIO) else b"",
                    )
                )
        if sop_instance_uid in self.abort_on:
            event.assoc.abort()
        return self.statuses.get(sop_instance_uid, self.status)
