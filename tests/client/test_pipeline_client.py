"""The pipeline client and the example pipeline against a real ``dicom-gateway serve``.

Every test runs on RabbitMQ and S3 (the plugin's ``dicom_gateway``, whose services come from the
``GATEWAY_TEST_*`` variables) and on the embedded defaults (``embedded_gateway``). The export
destination is dcmtk's ``storescp``, started before the gateway so that its port can be
configured.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aio_pika
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from contracts import AssociationReleased, ExportCompleted, ExportStatus
from gateway.bus import dead_letter_queue, open_event_log
from gateway_client import ClientSettings, PipelineClient
from gateway_client.testing import RunningGateway, gateway_environment
from tests.support.factories import ct_series, data_set_bytes, file_meta_length
from tests.support.storescp import Storescp

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPOSITORY_ROOT / "examples" / "secondary_capture_pipeline.py"
GATEWAYS = {"rabbitmq-s3": "dicom_gateway", "embedded": "embedded_gateway"}


def load_example() -> ModuleType:
    """The example script as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("secondary_capture_pipeline", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Storescp]:
    with Storescp(tmp_path / "pacs") as pacs:
        yield pacs


@pytest.fixture
def dicom_gateway_config(pacs: Storescp) -> dict[str, Any]:
    destination = {"name": "pacs", "ae_title": pacs.ae_title, "host": "127.0.0.1"}
    return {"export": {"destinations": [{**destination, "port": pacs.port}]}}


# Marked by hand: the gateway fixtures are requested at run time, where the hook that marks
# integration tests cannot see them (tests.support.markers).
@pytest.fixture(
    params=[pytest.param(name, marks=pytest.mark.integration) for name in sorted(GATEWAYS)]
)
def gateway(request: pytest.FixtureRequest) -> RunningGateway:
    running: RunningGateway = request.getfixturevalue(GATEWAYS[request.param])
    return running


def client_settings(gateway: RunningGateway) -> ClientSettings:
    return ClientSettings.from_gateway(gateway.settings)


async def subscribed(gateway: RunningGateway, consumer: str) -> None:
    """Declare ``consumer``'s queue now, so that it keeps events published before it runs."""
    async with PipelineClient(client_settings(gateway), name="client-tests") as client:
        await client.subscribe(consumer=consumer, pipeline=gateway.pipeline)


async def dead_letters(gateway: RunningGateway, consumer: str) -> int:
    """How many of ``consumer``'s events were rejected."""
    if gateway.settings.broker.embedded:
        event_log = await asyncio.to_thread(open_event_log, gateway.settings.broker)
        try:
            return len(await asyncio.to_thread(event_log.dead_letters, consumer))
        finally:
            event_log.close()
    connection = await aio_pika.connect(gateway.settings.broker.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(dead_letter_queue(consumer), passive=True)
        count = queue.declaration_result.message_count
        assert count is not None
        return count


def test_client_receives_reads_and_exports(
    gateway: RunningGateway, pacs: Storescp, tmp_path: Path
) -> None:
    series = ct_series(tmp_path / "in", 3)
    consumer = gateway.consumer_name("client-tests")

    async def scenario() -> tuple[AssociationReleased, list[bytes], ExportCompleted]:
        async with PipelineClient(client_settings(gateway), name="client-tests") as client:
            subscription = await client.subscribe(consumer=consumer, pipeline=gateway.pipeline)
            await asyncio.to_thread(gateway.send, [instance.path for instance in series])
            async with asyncio.timeout(30):
                first = await subscription.next()
                await first.requeue()
                again = await subscription.next()
            assert (first.redelivered, again.redelivered) == (False, True)
            assert again.event == first.event
            released = again.event
            stored = [await client.read_object(i.object_key) for i in released.instances]
            export_id = await client.request_export(
                destination="pacs", association_id=released.association_id
            )
            completed = await client.wait_for_completion(export_id, timeout=30)
            await again.ack()

            await asyncio.to_thread(gateway.send, [series[0].path])
            async with asyncio.timeout(30):
                await (await subscription.next()).reject("not for this pipeline")
                # The broker dead-letters after it took the reject, not before it answers.
                while await dead_letters(gateway, consumer) == 0:
                    await asyncio.sleep(0.05)
            assert await dead_letters(gateway, consumer) == 1
        return released, stored, completed

    released, stored, completed = asyncio.run(scenario())

    # Stored in the order sent: the gateway's file meta, then the data set as it was sent.
    assert [i.sop_instance_uid for i in released.instances] == [s.uids.sop_instance for s in series]
    for instance, part10 in zip(series, stored, strict=True):
        assert part10[file_meta_length(part10) :] == data_set_bytes(instance.path)
    assert completed.status is ExportStatus.SUCCEEDED, completed
    received = {str(dcmread(path).SOPInstanceUID) for path in pacs.received_files()}
    assert received == {s.uids.sop_instance for s in series}
    assert gateway.wait_for_association(timeout=10) == released


def test_example_pipeline_exports_a_secondary_capture(
    gateway: RunningGateway, pacs: Storescp, tmp_path: Path
) -> None:
    series = ct_series(tmp_path / "in", 4, seed=7)
    consumer = gateway.consumer_name("secondary-capture")
    asyncio.run(subscribed(gateway, consumer))
    command = [
        sys.executable,
        str(EXAMPLE),
        "--config",
        str(gateway.config_path),
        "--destination",
        "pacs",
        "--consumer",
        consumer,
        "--timeout",
        "30",
        "--once",
    ]
    with subprocess.Popen(
        command,
        cwd=tmp_path,
        env=gateway_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as pipeline:
        gateway.send([instance.path for instance in series])
        output, _ = pipeline.communicate(timeout=60)
    printed = output.decode(errors="replace")
    assert pipeline.returncode == 0, printed
    assert "pacs: succeeded, sent 1, failed 0" in printed

    (received,) = pacs.received_files()
    derived = dcmread(received)
    assert derived.SOPClassUID == SecondaryCaptureImageStorage
    assert derived.StudyInstanceUID == series[0].uids.study
    assert derived.SeriesInstanceUID != series[0].uids.series
    assert derived.SOPInstanceUID not in {s.uids.sop_instance for s in series}
    assert (derived.Rows, derived.Columns, derived.BitsAllocated) == (64, 64, 8)
    assert len(derived.SourceImageSequence) == 4
    assert gateway.wait_for_association(timeout=10).instance_count == 4


def grey(rows: int, columns: int, values: list[int]) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.PixelRepresentation = 0
    ds.PixelData = b"".join(value.to_bytes(2, "little") for value in values)
    return ds


def test_example_projection_takes_the_maximum_and_scales_to_8_bits() -> None:
    example = load_example()
    images = [grey(2, 2, [0, 400, 0, 10]), grey(2, 2, [200, 0, 0, 800]), grey(1, 1, [9999])]
    projection = example.maximum_intensity_projection(images)
    assert projection == example.GreyImage(2, 2, bytes([63, 127, 0, 255]))
    assert example.maximum_intensity_projection([Dataset()]) is None
