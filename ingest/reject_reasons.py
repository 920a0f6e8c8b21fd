"""The A-ASSOCIATE-RJ codes ingest answers with (PS3.8 9.3.4), named once.

Status words shared with export are in :mod:`gateway.dicom_status`.
"""

from enum import IntEnum
from typing import NamedTuple


class RejectResult(IntEnum):
    PERMANENT = 0x01
    TRANSIENT = 0x02


class RejectSource(IntEnum):
    SERVICE_USER = 0x01
    SERVICE_PROVIDER_ACSE = 0x02
    SERVICE_PROVIDER_PRESENTATION = 0x03


class Reject(NamedTuple):
    """An A-ASSOCIATE-RJ (result, source, reason) triple with a name for logs and metrics."""

    name: str
    result: RejectResult
    source: RejectSource
    reason: int


#: More associations than ``max_associations`` (PS3.8 9.3.4: provider, presentation, 2).
TOO_MANY_ASSOCIATIONS = Reject(
    "local-limit-exceeded", RejectResult.TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, 0x02
)
#: More associations from one calling AE title or one address than its optional limit: the
#: same answer (local limit exceeded), its own name in logs and metrics.
TOO_MANY_FROM_SOURCE = Reject(
    "source-limit-exceeded",
    RejectResult.TRANSIENT,
    RejectSource.SERVICE_PROVIDER_PRESENTATION,
    0x02,
)
#: The spool is above its watermark or below its reserve (provider, presentation, 1).
SPOOL_FULL = Reject(
    "temporary-congestion", RejectResult.TRANSIENT, RejectSource.SERVICE_PROVIDER_PRESENTATION, 0x01
)
#: The calling AE title is not allowed to send here (user, 3).
CALLING_AE_NOT_RECOGNISED = Reject(
    "calling-ae-not-recognised", RejectResult.PERMANENT, RejectSource.SERVICE_USER, 0x03
)
#: The called AE title is not one of ours (user, 7).
CALLED_AE_NOT_RECOGNISED = Reject(
    "called-ae-not-recognised", RejectResult.PERMANENT, RejectSource.SERVICE_USER, 0x07
)
#: Our own handler failed while deciding; we fail closed (user, no reason given).
NO_REASON_GIVEN = Reject("no-reason-given", RejectResult.TRANSIENT, RejectSource.SERVICE_USER, 0x01)
