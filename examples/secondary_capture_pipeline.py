"""Example pipeline: a Secondary Capture for every association the gateway receives.

For each association-released event it reads the association's instances from storage, makes
a maximum intensity projection of their grey-scale images (the first frame of each, as an
8-bit image), writes it back as a Secondary Capture of the same study (new series, new SOP
instance, Part 10 with file meta), asks the export service to send it to a configured
destination, waits for the completion and prints it::

    python examples/secondary_capture_pipeline.py --config gateway.toml --destination example

Without ``--config`` it uses the configuration ``dicom-gateway serve`` uses without one, so run
it from the directory ``serve`` runs in. ``--once`` stops after the first association (exit
status 0 when its export succeeded). Processing is idempotent: the derived UIDs, object key and
export id depend only on the source association, so a redelivered event (after a crash, say)
writes the same object and does not send it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import uuid
from array import array
from collections.abc import Sequence
from contextlib import aclosing
from io import BytesIO
from pathlib import Path
from typing import Final, NamedTuple

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from contracts import AssociationReleased, ExportCompleted, ExportStatus
from gateway_client import (
    GatewayError,
    ObjectMissing,
    PipelineClient,
    ReceivedAssociation,
    derived_object_key,
)

log = logging.getLogger("secondary_capture_pipeline")

#: Names this pipeline: its derived-object prefix, its export ids and its client name.
PRODUCER: Final = "secondary-capture"
#: Namespace of the UIDs this example derives (2.25 UIDs from name-based UUIDs, PS3.5 B.2).
UID_NAMESPACE: Final = uuid.UUID("3e0f9a52-6b1d-5c47-8e2a-d49c0b7f1a36")
#: How long to wait before an event that failed for a passing reason is offered again.
RETRY_DELAY_SECONDS: Final = 10.0
#: The patient and study attributes the derived object shares with its sources.
_SHARED: Final = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


class GreyImage(NamedTuple):
    rows: int
    columns: int
    pixels: bytes  # 8-bit, row by row


def derived_uid(association_id: str, what: str) -> UID:
    """A UID that depends only on the source association and what it identifies."""
    return UID(f"2.25.{uuid.uuid5(UID_NAMESPACE, f'{association_id}/{what}').int}")


def first_frame(ds: Dataset) -> array[int] | None:
    """The first frame of a native single-sample image as integers; None for anything else
    (compressed, colour, no pixel data), which this example leaves out."""
    if "PixelData" not in ds:
        return None
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    if (
        transfer_syntax.is_compressed
        or ds.get("SamplesPerPixel", 1) != 1
        or ds.get("BitsAllocated") not in (8, 16)
    ):
        return None
    signed = ds.get("PixelRepresentation", 0) == 1
    code = {(8, False): "B", (8, True): "b", (16, False): "H", (16, True): "h"}[
        (ds.BitsAllocated, signed)
    ]
    count = int(ds.Rows) * int(ds.Columns)
    values = array(code, bytes(ds.PixelData[: count * ds.BitsAllocated // 8]))
    if len(values) != count:
        return None  # truncated pixel data
    if transfer_syntax.is_little_endian != (sys.byteorder == "little"):
        values.byteswap()
    return values


def maximum_intensity_projection(sources: Sequence[Dataset]) -> GreyImage | None:
    """The pixel-wise maximum over the images of the first image's size, scaled to 0-255."""
    frames = [(ds, frame) for ds in sources if (frame := first_frame(ds)) is not None]
    if not frames:
        return None
    rows, columns = int(frames[0][0].Rows), int(frames[0][0].Columns)
    projection = list(frames[0][1])
    for ds, frame in frames[1:]:
        if (int(ds.Rows), int(ds.Columns)) == (rows, columns):
            projection = list(map(max, projection, frame))
    low, high = min(projection), max(projection)
    span = max(high - low, 1)
    return GreyImage(rows, columns, bytes((value - low) * 255 // span for value in projection))


def secondary_capture(
    released: AssociationReleased, sources: Sequence[Dataset], image: GreyImage
) -> Dataset:
    """The derived instance: same patient and study, a series of its own."""
    first = sources[0]
    ds = Dataset()
    for keyword in _SHARED:
        if keyword in first:
            ds[keyword] = first[keyword]
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = derived_uid(released.association_id, "instance")
    ds.SeriesInstanceUID = derived_uid(released.association_id, "series")
    ds.Modality = "OT"
    ds.SeriesNumber = 9001
    ds.SeriesDescription = "Maximum intensity projection (example pipeline)"
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"  # workstation
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = f"maximum intensity projection of {len(sources)} instances"
    ds.SourceImageSequence = DicomSequence(
        [_reference(source) for source in sources if "SOPInstanceUID" in source]
    )
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = image.rows
    ds.Columns = image.columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = image.pixels + b"\0" * (len(image.pixels) % 2)  # even length
    ds["PixelData"].VR = "OB"
    return ds


def _reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def part10(ds: Dataset) -> bytes:
    """``ds`` as a Part 10 file in explicit VR little endian, with its file meta."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


async def process(
    client: PipelineClient, released: AssociationReleased, destination: str, timeout: float
) -> ExportCompleted | None:
    """Derive, store and export the Secondary Capture of one association.

    None when the association has no image this example can read.
    """
    sources = [
        dcmread(BytesIO(await client.read_object(instance.object_key)))
        for instance in released.instances
    ]
    image = maximum_intensity_projection(sources)
    if image is None:
        return None
    derived = secondary_capture(released, sources, image)
    key = derived_object_key(
        released.association_id,
        PRODUCER,
        str(derived.StudyInstanceUID),
        str(derived.SeriesInstanceUID),
        str(derived.SOPInstanceUID),
    )
    await client.write_object(key, part10(derived))
    print(f"association {released.association_id}: stored {key}", flush=True)
    export_id = await client.request_export(
        destination=destination,
        object_keys=[key],
        export_id=f"{PRODUCER}-{released.association_id}",
        correlation={"source_association_id": released.association_id},
    )
    return await client.wait_for_completion(export_id, timeout)


def describe(completed: ExportCompleted) -> str:
    lines = [f"export {completed.export_id}: {completed.status}"]
    for result in completed.destinations:
        lines.append(
            f"  {result.name}: {result.status}, sent {result.instances_sent}, "
            f"failed {result.instances_failed}"
        )
        lines += [f"    {i.object_key}: {i.error}" for i in result.instances if i.error]
    return "\n".join(lines)


async def handle(
    client: PipelineClient, received: ReceivedAssociation, destination: str, timeout: float
) -> bool:
    """Process one event and settle it; whether its Secondary Capture was exported."""
    released = received.event
    try:
        completed = await process(client, released, destination, timeout)
    except (InvalidDicomError, AttributeError, ValueError, ObjectMissing) as exc:
        # The objects themselves are wrong or gone: processing them again cannot help.
        await received.reject(f"cannot derive a Secondary Capture: {exc}")
        return False
    except GatewayError as exc:
        # Storage, bus or export service not there (or slow): try again later.
        log.warning("association %s: %s; offered again later", released.association_id, exc)
        await received.requeue(RETRY_DELAY_SECONDS)
        return False
    await received.ack()
    if completed is None:
        print(f"association {released.association_id}: no image to derive from", flush=True)
        return False
    print(describe(completed), flush=True)
    return completed.status is ExportStatus.SUCCEEDED


async def run(arguments: argparse.Namespace) -> int:
    async with PipelineClient.from_config(arguments.config, name=PRODUCER) as client:
        associations = client.associations(pipeline=arguments.pipeline, consumer=arguments.consumer)
        print(f"waiting for associations of pipeline {arguments.pipeline}", flush=True)
        async with aclosing(associations) as events:
            async for received in events:
                exported = await handle(client, received, arguments.destination, arguments.timeout)
                if arguments.once:
                    return 0 if exported else 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", type=Path, help="the gateway's TOML configuration")
    parser.add_argument("--destination", required=True, help="a configured export destination")
    parser.add_argument("--pipeline", default="default", help="whose events to process")
    parser.add_argument(
        "--consumer",
        default=PRODUCER,
        help="queue (RabbitMQ) or subscription (local event log) of this pipeline",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for an export's completion"
    )
    parser.add_argument("--once", action="store_true", help="stop after one association")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(arguments))
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
