"""DICOM status words and A-ASSOCIATE-RJ codes that ingest answers with (PS3.4, PS3.8).

Named here once so that no handler carries bare hex.
"""

from enum import IntEnum
from typing import NamedTuple

#: The Verification SOP Class (C-ECHO), PS3.4 Annex A.
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"


class Status(IntEnum):
    """C-STORE and C-ECHO response statuses (PS3.4 Annex B.2.3, PS3.7 Annex C)."""

    SUCCESS = 0x0000
    #: Refused: out of resources (the spool could not take the instance).
    OUT_OF_RESOURCES = 0xA700
    #: Error: cannot understand (the data set could not be parsed or names invalid UIDs).
    CANNOT_UNDERSTAND = 0xC000


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
