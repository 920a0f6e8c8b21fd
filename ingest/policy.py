"""Association admission: a pure decision from the request, the configuration and the spool.

Order matters and follows what a sender can do about it: a permanent misconfiguration (wrong
called or calling AE) is reported before transient conditions (limit, disk), so an integration
engineer sees the real problem at once rather than after the load goes down.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from gateway.settings import AESettings, IngestSettings, SourceSettings
from ingest.reject_reasons import (
    CALLED_AE_NOT_RECOGNISED,
    CALLING_AE_NOT_RECOGNISED,
    SPOOL_FULL,
    TOO_MANY_ASSOCIATIONS,
    Reject,
)

_GIB = 1024**3


@dataclass(frozen=True)
class AssociationRequest:
    called_ae_title: str
    calling_ae_title: str
    #: The sender's address as :func:`peer_address` gives it.
    remote_host: str


def peer_address(address: str) -> str:
    """The sender's IP address as ingest names it: an IPv4 sender on a listener bound to an
    IPv6 address (``"::"`` takes both) is reported by the socket as ``::ffff:a.b.c.d``, and is
    ``a.b.c.d`` here, as it would be on an IPv4 listener. So a ``[[sources]]`` host, the
    per-address limit, the log and the event's ``remote_host`` do not depend on the listener's
    address family. Anything else is returned as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return address


@dataclass(frozen=True)
class SpoolUsage:
    """The spool filesystem's space: used, and free for the (unprivileged) gateway."""

    used_bytes: int
    free_bytes: int

    @property
    def used_percent(self) -> float:
        """As ``df`` reports it: blocks reserved for root count neither as used nor as free.

        Counting them as used would put the watermark well below what the operator sees (on
        a filesystem with a large reserve, 75% here could be 30% in ``df``).
        """
        usable = self.used_bytes + self.free_bytes
        if usable <= 0:
            return 100.0
        return 100.0 * self.used_bytes / usable


@dataclass(frozen=True)
class Admit:
    """The association may go ahead, announced to ``ae.pipeline``."""

    ae: AESettings


Decision = Admit | Reject


def spool_has_room(usage: SpoolUsage, watermark_percent: float, reserved_gb: float) -> bool:
    """True while the spool filesystem is at or below the watermark and above the reserve."""
    return usage.used_percent <= watermark_percent and usage.free_bytes >= reserved_gb * _GIB


def source_matches(source: SourceSettings, calling_ae_title: str, remote_host: str) -> bool:
    return source.ae_title == calling_ae_title and source.host in (None, remote_host)


def calling_ae_allowed(
    request: AssociationRequest,
    ae: AESettings,
    sources: tuple[SourceSettings, ...],
    reject_unknown_sources: bool,
) -> bool:
    """Whether the caller may talk to ``ae``.

    An AE with ``allowed_sources`` admits only those sources; otherwise, with
    ``reject_unknown_sources``, any configured source; otherwise anyone.
    """
    if ae.allowed_sources:
        candidates = tuple(s for s in sources if s.name in ae.allowed_sources)
    elif reject_unknown_sources:
        candidates = sources
    else:
        return True
    return any(source_matches(s, request.calling_ae_title, request.remote_host) for s in candidates)


def decide(
    request: AssociationRequest,
    settings: IngestSettings,
    sources: tuple[SourceSettings, ...],
    active_associations: int,
    spool: SpoolUsage,
) -> Decision:
    """Admit the association or say which A-ASSOCIATE-RJ to send."""
    ae = next((a for a in settings.ae if a.ae_title == request.called_ae_title), None)
    if ae is None:
        return CALLED_AE_NOT_RECOGNISED
    if not calling_ae_allowed(request, ae, sources, settings.reject_unknown_sources):
        return CALLING_AE_NOT_RECOGNISED
    if active_associations >= settings.max_associations:
        return TOO_MANY_ASSOCIATIONS
    if not spool_has_room(spool, settings.storage_watermark_percent, settings.reserved_storage_gb):
        return SPOOL_FULL
    return Admit(ae)


class Limit(StrEnum):
    """Which association limit an association would have crossed (the value names the
    journal column it is counted by, or "total")."""

    TOTAL = "total"
    CALLING_AE = "calling_ae_title"
    ADDRESS = "remote_host"


@dataclass(frozen=True)
class Limits:
    """The association limits admission checks: ``max_associations`` and the optional ones per
    calling AE title and per remote address."""

    total: int
    per_calling_ae: int | None = None
    per_address: int | None = None
