"""A ``dicom-gateway serve`` under test for a pipeline's tests, and helpers to talk to it.

:func:`running_gateway` runs it (:class:`~gateway_client.testing.process.GatewayProcess`) with
a configuration of its own (:func:`~gateway_client.testing.config.gateway_config`): ports the
system chooses, its own bucket, exchange and export queue (so tests can run side by side on
shared services), or, without services, the embedded defaults in its directory. It is ready
when ``/readyz`` answers 200. At the end the process is stopped and what it created on the
services is deleted (bucket, exchange, queues).
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import evt

from contracts.events import AssociationReleased
from gateway.bus import dead_letter_queue
from gateway.dicom_status import stored
from gateway.netdicom.ae import PromptAE
from gateway.netdicom.dicom_socket import handle_conn_open
from gateway.settings import GatewaySettings
from gateway_client.client import PipelineClient
from gateway_client.settings import ClientSettings
from gateway_client.testing.cleanup import bucket_name_for, delete_amqp_topology, delete_bucket
from gateway_client.testing.config import gateway_config, merged
from gateway_client.testing.process import DEFAULT_STARTUP_SECONDS, GatewayProcess
from gateway_client.testing.services import GatewayServices
from gateway_client.testing.toml_writer import to_toml


@dataclass
class RunningGateway:
    """A ``dicom-gateway serve`` process under test, and helpers to talk to it.

    :attr:`settings` is its configuration as written; the ports it listens on are
    :attr:`port` and :attr:`http_port` (chosen by the system).
    """

    process: GatewayProcess
    settings: GatewaySettings
    #: The names of this gateway's own bucket and consumer queues are derived from it.
    bucket: str
    _consumers: list[str] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.process.directory

    @property
    def config_path(self) -> Path:
        return self.process.config_path

    @property
    def host(self) -> str:
        return self.process.host

    @property
    def port(self) -> int:
        """The DICOM port."""
        return self.process.port

    @property
    def http_port(self) -> int:
        return self.process.http_port

    @property
    def ae_title(self) -> str:
        """The called AE title :meth:`send` uses: the first configured one."""
        return self.settings.ingest.ae[0].ae_title

    @property
    def pipeline(self) -> str:
        """The pipeline of :attr:`ae_title`'s associations."""
        return self.settings.ingest.ae[0].pipeline

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def log_text(self) -> str:
        return self.process.log_text()

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)

    def http_get(self, path: str) -> tuple[int, str]:
        """GET ``path`` (``/readyz``, ``/metrics``...): status and body."""
        return self.process.http_get(path)

    def consumer_name(self, stem: str) -> str:
        """A consumer name for this test only, whose queues are deleted at the end.

        Queue names are global on a RabbitMQ, so two tests that used the same consumer name
        would share one queue bound to both tests' exchanges.
        """
        name = f"{stem}.{self.bucket}"
        self._consumers.append(name)
        return name

    def send(
        self,
        items: Iterable[Path | str | Dataset],
        *,
        calling_ae: str = "GWTEST-SCU",
        timeout: float = 60.0,
    ) -> None:
        """C-STORE Part 10 files or data sets in one association, then release it.

        Each is proposed in its own transfer syntax (at most 128 different SOP class and
        transfer syntax pairs per call); a data set without file meta is sent as explicit VR
        little endian. Raises :class:`AssertionError` when the association fails or an
        instance is not stored.
        """
        datasets = [_sendable(item) for item in items]
        # Not pynetdicom's own AE: its requestor can lose a response that comes back before
        # its reactor has paused, and ingest answers that fast (gateway/netdicom/reactor_hold.py).
        ae = PromptAE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        for context in dict.fromkeys(
            (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets
        ):
            ae.add_requested_context(context[0], [context[1]])
        assoc = ae.associate(
            self.host,
            self.port,
            ae_title=self.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, handle_conn_open)],
        )
        if not assoc.is_established:
            raise AssertionError(f"no association with the gateway\n{self.log_tail()}")
        failed: list[str] = []
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds).get("Status")
                if status is None:
                    failed.append(f"{ds.SOPInstanceUID}: no response")
                elif not stored(int(status)):
                    failed.append(f"{ds.SOPInstanceUID}: status 0x{int(status):04X}")
        finally:
            if assoc.is_established:
                assoc.release()
        if failed:
            raise AssertionError("not stored: " + "; ".join(failed))

    def wait_for_association(self, timeout: float = 30.0) -> AssociationReleased:
        """The next association-released event (of any pipeline) not returned before."""
        (released,) = self.wait_for_associations(1, timeout)
        return released

    def wait_for_associations(self, count: int, timeout: float = 30.0) -> list[AssociationReleased]:
        """The next ``count`` association-released events, in the order they were published."""
        return asyncio.run(self.wait_for_associations_async(count, timeout))

    async def wait_for_associations_async(
        self, count: int, timeout: float = 30.0
    ) -> list[AssociationReleased]:
        """:meth:`wait_for_associations` for async code."""
        try:
            return await self._observe(count, timeout)
        except TimeoutError:
            raise AssertionError(
                f"fewer than {count} association event(s) within {timeout:g} s\n{self.log_tail()}"
            ) from None

    @property
    def _observer(self) -> str:
        return f"observer.{self.bucket}"

    async def _observe(self, count: int, timeout: float) -> list[AssociationReleased]:
        # The observer's queue exists from start-up on (running_gateway subscribes it with
        # count 0), so nothing published since then is missed.
        found: list[AssociationReleased] = []
        settings = ClientSettings.from_gateway(self.settings)
        async with PipelineClient(settings, name="gateway-tests") as client:
            subscription = await client.subscribe(consumer=self._observer, pipeline=None)
            async with asyncio.timeout(timeout):
                while len(found) < count:
                    received = await subscription.next()
                    await received.ack()
                    found.append(received.event)
        return found

    def queues(self) -> list[str]:
        """Every queue this gateway and its tests declared (RabbitMQ)."""
        consumers = [self._observer, *self._consumers]
        return [
            self.settings.export.queue,
            dead_letter_queue(self.settings.export.queue),
            *consumers,
            *map(dead_letter_queue, consumers),
        ]

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait; SIGKILL after ``timeout``. Returns the exit status."""
        return self.process.stop(timeout)


def _sendable(item: Path | str | Dataset) -> Dataset:
    if not isinstance(item, Dataset):
        return dcmread(item)
    if "TransferSyntaxUID" in getattr(item, "file_meta", ()):
        return item
    ds = Dataset(item)  # a new data set sharing the elements: the caller's stays as it was
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@contextmanager
def running_gateway(
    directory: Path,
    services: GatewayServices | None,
    *,
    name: str,
    overrides: Mapping[str, Any] | None = None,
    startup_timeout: float = DEFAULT_STARTUP_SECONDS,
) -> Iterator[RunningGateway]:
    """Run ``dicom-gateway serve`` for the block (see the module docstring).

    ``name`` (the test's) goes into the bucket name; ``overrides`` is merged into the
    configuration (:func:`~gateway_client.testing.config.merged`), e.g.
    ``{"export": {"destinations": [...]}}``.
    """
    bucket = bucket_name_for(name)
    config = merged(gateway_config(directory, services, bucket=bucket), overrides or {})
    process = GatewayProcess(config, directory, service="serve", startup_timeout=startup_timeout)
    # What the gateway process reads: only its file (its environment has no GATEWAY_*), so the
    # file is validated without the settings sources that would read this process's variables.
    settings = GatewaySettings.model_validate(tomllib.loads(to_toml(process.prepared_config)))
    gateway = RunningGateway(process, settings, bucket)
    with ExitStack() as cleanup:
        if services is not None:
            cleanup.callback(delete_bucket, services.s3, settings.storage.bucket)
            cleanup.callback(
                lambda: asyncio.run(
                    delete_amqp_topology(
                        services.amqp_url, settings.broker.exchange, gateway.queues()
                    )
                )
            )
        cleanup.callback(process.stop)
        process.start()
        # Bound now, so that wait_for_association sees every association from here on.
        asyncio.run(gateway.wait_for_associations_async(0, startup_timeout))
        yield gateway
