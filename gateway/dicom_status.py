"""DICOM UIDs and status words both services use (PS3.4, PS3.7), named once."""

from enum import IntEnum

#: The Verification SOP Class (C-ECHO), PS3.4 Annex A.
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"


class Status(IntEnum):
    """C-STORE and C-ECHO response statuses (PS3.4 Annex B.2.3, PS3.7 Annex C)."""

    SUCCESS = 0x0000
    #: Warning: attribute list error (PS3.7 C.4.1.1).
    WARNING_ATTRIBUTE_LIST = 0x0001
    #: Warning: coercion of data elements.
    WARNING_COERCION = 0xB000
    #: Warning: elements discarded.
    WARNING_ELEMENTS_DISCARDED = 0xB006
    #: Warning: data set does not match SOP class.
    WARNING_DATA_SET_MISMATCH = 0xB007
    #: Refused: out of resources (the spool could not take the instance).
    OUT_OF_RESOURCES = 0xA700
    #: Error: data set does not match SOP class (its SOP Class or Instance UID is not the
    #: command's Affected one, as dcmtk's storescp answers too).
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    #: Error: cannot understand (the data set could not be parsed or names invalid UIDs).
    CANNOT_UNDERSTAND = 0xC000


#: Statuses under which the instance was stored all the same.
STORED_WITH_WARNING = frozenset(
    {
        Status.WARNING_ATTRIBUTE_LIST,
        Status.WARNING_COERCION,
        Status.WARNING_ELEMENTS_DISCARDED,
        Status.WARNING_DATA_SET_MISMATCH,
    }
)
