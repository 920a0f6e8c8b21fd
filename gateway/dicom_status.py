"""DICOM UIDs and status words both services use (PS3.4, PS3.7), named once."""

from enum import IntEnum

#: The Verification SOP Class (C-ECHO), PS3.4 Annex A.
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"


class Status(IntEnum):
    """C-STORE and C-ECHO response statuses (PS3.4 Annex B.2.3, PS3.7 Annex C)."""

    SUCCESS = 0x0000
    #: Warning: requested optional attributes are not supported (PS3.7 C.4).
    WARNING_OPTIONAL_ATTRIBUTES = 0x0001
    #: Warning: attribute list error (PS3.7 C.4).
    WARNING_ATTRIBUTE_LIST = 0x0107
    #: Warning: attribute value out of range (PS3.7 C.4).
    WARNING_VALUE_OUT_OF_RANGE = 0x0116
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


#: The warnings outside the Bxxx range (PS3.7 C.1.2: warnings are 0001, 0107, 0116 and Bxxx).
_OTHER_WARNINGS = frozenset(
    {
        Status.WARNING_OPTIONAL_ATTRIBUTES,
        Status.WARNING_ATTRIBUTE_LIST,
        Status.WARNING_VALUE_OUT_OF_RANGE,
    }
)


def stored_with_warning(status: int) -> bool:
    """A warning: the instance was stored all the same (PS3.7 C.1.2), whatever the Bxxx
    warning's meaning, including those a service defines beyond the three of PS3.4."""
    return status in _OTHER_WARNINGS or status & 0xF000 == 0xB000


def stored(status: int) -> bool:
    """The C-STORE succeeded, with or without a warning."""
    return status == Status.SUCCESS or stored_with_warning(status)
