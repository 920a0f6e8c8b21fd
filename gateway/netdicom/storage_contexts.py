"""Which presentation contexts an acceptor takes: Verification and Storage SOP classes
(standard, private and not yet known ones), nothing else.

pynetdicom's unrestricted storage service accepts every abstract syntax that its own list
does not name as another service's. Modality Worklist and Query/Retrieve FIND (and Color
Palette Query/Retrieve) are not in that list, so they were accepted and a C-FIND was then
answered 0xC311 with a traceback, contrary to the conformance statement.
:func:`storage_only` wraps that negotiation: such a context is rejected with *abstract syntax
not supported* (PS3.8 9.3.3.2). pynetdicom offers no hook for this, so :mod:`pynetdicom.acse`'s
reference to the negotiation is replaced at start-up (gateway/netdicom/modes.py).

The same negotiation answers an SCP/SCU Role Selection sub-item for a storage SOP class with
the roles proposed. Proposed with neither role (SCU 0, SCP 0, which PS3.7 D.3.3.4 does not
give a requestor), the context stayed accepted and pynetdicom then failed to encode its own
answer: the connection was closed without one. Such a context is rejected here instead, with
*user rejection* (as pynetdicom's negotiation of the other services rejects a context in
which neither side may act), and no role item is answered for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydicom.uid import UID

from gateway.dicom_status import VERIFICATION_SOP_CLASS

#: Presentation context result "abstract-syntax-not-supported (provider rejection)".
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
#: PS3.8 9.3.3.2: the context was accepted.
ACCEPTANCE = 0x00
#: Presentation context result "user-rejection".
USER_REJECTION = 0x01
_STANDARD_ROOT = "1.2.840.10008."
#: Where every Storage SOP class of the image and object storage families lives (PS3.4 B.5),
#: so that a standard class newer than pydicom's dictionary is still taken.
_STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
_RETIRED = " (Retired)"

Negotiation = Callable[..., tuple[list[Any], list[Any]]]


def is_storage_sop_class(uid: str) -> bool:
    """Whether ``uid`` names a Storage SOP class, or may: any private one, a standard one
    pydicom names "... Storage", or an unknown standard one under the storage root."""
    if not uid.startswith(_STANDARD_ROOT):
        return True
    name = UID(uid).name
    if name == uid:  # not in pydicom's dictionary
        return uid.startswith(_STORAGE_ROOT)
    return name.removesuffix(_RETIRED).endswith(" Storage")


def storage_only(negotiate: Negotiation) -> Negotiation:
    """``negotiate`` (pynetdicom's ``negotiate_unrestricted``), rejecting what it accepted of
    an abstract syntax that is neither Verification nor storage, or in which role selection
    left neither side a role."""

    def negotiate_storage_only(
        requested: Sequence[Any], supported: Sequence[Any], roles: Any = None
    ) -> tuple[list[Any], list[Any]]:
        results, reply_roles = negotiate(requested, supported, roles)
        refused = set()
        for context in results:
            syntax = str(context.abstract_syntax)
            if context.result != ACCEPTANCE:
                continue
            if not (syntax == VERIFICATION_SOP_CLASS or is_storage_sop_class(syntax)):
                context.result = ABSTRACT_SYNTAX_NOT_SUPPORTED
                refused.add(syntax)
            elif not context.as_scu and not context.as_scp:
                context.result = USER_REJECTION
                refused.add(syntax)
        return results, [r for r in reply_roles if str(r.sop_class_uid) not in refused]

    return negotiate_storage_only
