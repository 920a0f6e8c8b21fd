"""Association requests the service refuses before decoding them (issue 17, item 3): six 8 MB
requests at once and one with 200 presentation contexts are rejected in milliseconds, memory
stays where it was, and an honest sender beside them is served."""

from __future__ import annotations

import asyncio
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.netdicom.request_limits import rejection
from gateway_client.testing import GatewayProcess
from tests.support import dcmtk
from tests.support.association_requests import association_request, first_answer
from tests.support.factories import CT_IMAGE_STORAGE as CT
from tests.support.factories import ct_series
from tests.support.ingest import EMBEDDED, Ingest, released
from tests.support.proc import descendants, memory_kib
from tests.support.prometheus import metric
from tests.support.raw_scu import P_DATA_TF_TYPE, Aborted, RawAssociation

#: Before the limit one of these requests took 10.6 s to answer and six went unanswered for
#: minutes (docs/reliability.md); refused unread, each takes milliseconds.
ANSWER_SECONDS = 5.0
#: Six of them at once grew the gateway from 67 to 878 MiB before; an honest association of
#: three small instances runs meanwhile.
GROWTH_MIB = 30


def _memory_kib(processes: list[int], field: str) -> int:
    return sum(memory_kib(pid, field) for pid in processes)


@pytest.mark.backends(EMBEDDED)
@pytest.mark.parametrize("workers", [1, 2])
def test_oversized_requests_are_rejected_unread_while_an_honest_sender_is_served(
    ingest: Ingest, inbox: Path, workers: int
) -> None:
    # The limit is the prompt DUL's: plain mode decodes every request (README, netdicom).
    config = ingest.config(workers=workers)
    config["netdicom"] = "prompt"
    gateway = ingest.start(config)
    assert gateway.pid is not None
    # With workers, they receive; the main process counts (/metrics).
    processes = [gateway.pid, *descendants([gateway.pid])]
    assert len(processes) == (1 if workers == 1 else 1 + workers)
    oversized = association_request("GATEWAY", "HUGE", contexts=128, transfer_syntaxes=2201)
    crowded = association_request("GATEWAY", "CROWDED", contexts=200)
    assert len(oversized) > 7_800_000
    assert len(crowded) < 262_144  # within the size limit: refused for its count
    series = ct_series(inbox, 3)
    baseline = _memory_kib(processes, "VmRSS")

    def answer(data: bytes) -> tuple[bytes, float]:
        started = time.monotonic()
        return first_answer(gateway.host, gateway.port, data, ANSWER_SECONDS), (
            time.monotonic() - started
        )

    with ingest.events() as events, ThreadPoolExecutor(7) as pool:
        refused = [pool.submit(answer, data) for data in [oversized] * 6 + [crowded]]
        dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series], "GATEWAY").check()
        answers = [future.result() for future in refused]
        events.wait_for(1)
    peak = _memory_kib(processes, "VmHWM")

    for answered, seconds in answers:
        assert answered == rejection()  # rejected-permanent, service user, no reason given
        assert seconds < ANSWER_SECONDS
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < GROWTH_MIB, f"the refused requests grew the gateway by {growth_mib:.0f} MiB"
    log = gateway.log_text()
    assert log.count("refused before decoding: request-too-long (7") == 6
    assert log.count("refused before decoding: too-many-contexts") == 1
    _, text = gateway.http_get("/metrics")
    rejected = "dicom_gateway_associations_rejected_total"
    assert metric(text, rejected, {"reason": "request-too-long"}) == 6
    assert metric(text, rejected, {"reason": "too-many-contexts"}) == 1
    assert dcmtk.echoscu(gateway.host, gateway.port, "GATEWAY").ok


@pytest.mark.backends(EMBEDDED)
def test_a_request_within_the_limit_is_still_decoded(ingest: Ingest) -> None:
    """Larger than honest senders make (128 contexts of all 45 transfer syntaxes pynetdicom
    knows come to 148 kB), and within the default limit: here 128 x 60, 219 kB."""
    config = ingest.config()
    config["netdicom"] = "prompt"
    gateway = ingest.start(config)
    request = association_request("GATEWAY", "LARGE", contexts=128, transfer_syntaxes=60)
    assert 150_000 < len(request) < 262_144
    answered = first_answer(gateway.host, gateway.port, request, ANSWER_SECONDS)
    assert answered[:1] == b"\x02"  # A-ASSOCIATE-AC


async def _announce_a_huge_pdu(gateway: GatewayProcess) -> float:
    """Open an association, begin a C-STORE, then send the header of a P-DATA-TF PDU of
    100 MiB and its first 16 KiB; how long until the service ends the association."""
    association = await RawAssociation.open(gateway.host, gateway.port, "GATEWAY", "HUGE-PDU", [CT])
    try:
        context = await association.send_store_command(CT, "1.2.3.4.5.6.7.8.9")
        started = time.monotonic()
        await association.send_raw(
            struct.pack(">BBI", P_DATA_TF_TYPE, 0, 100 << 20)
            + struct.pack(">IBB", (100 << 20) - 4, context, 0)
            + bytes(16_384)
        )
        with pytest.raises(Aborted):
            await asyncio.wait_for(association.response_status(), ANSWER_SECONDS)
        return time.monotonic() - started
    finally:
        await association.close()


@pytest.mark.backends(EMBEDDED)
def test_a_pdu_over_the_negotiated_length_is_aborted_unread(ingest: Ingest, inbox: Path) -> None:
    # The fast path reads P-DATA-TF PDUs in prompt mode (plain mode reads them whole).
    config = ingest.config()
    config["netdicom"] = "prompt"
    gateway = ingest.start(config)
    seconds = asyncio.run(_announce_a_huge_pdu(gateway))
    assert seconds < ANSWER_SECONDS
    assert "over the 262144 negotiated: association aborted" in gateway.log_text()
    series = ct_series(inbox, 2)
    with ingest.events() as events:
        dcmtk.storescu(gateway.host, gateway.port, [s.path for s in series], "GATEWAY").check()
        (message,) = events.wait_for(1)
    assert released(message).instance_count == 2
