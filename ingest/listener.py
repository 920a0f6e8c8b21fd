"""Where ingest's worker processes get their connections from.

With worker processes the parent alone listens and accepts, and hands each connection to the
worker with the fewest open ones (:mod:`ingest.workers.pool`): connections spread evenly, whereas
workers accepting on a shared socket (or ``SO_REUSEPORT``) take them as chance has it, and
three associations on one worker and one on the other are then as slow as one process. A
worker serves what it is handed with
:class:`~gateway.netdicom.handover.HandedConnectionsServer`.
"""

from __future__ import annotations

import socket


def open_listener(host: str, port: int, backlog: int) -> socket.socket:
    """Bind and listen; raises :class:`OSError` (the port is in use, say)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # "::" takes IPv4 senders too, as the single-process listener does (Linux's default).
    return socket.create_server(
        (host, port), family=family, backlog=backlog, dualstack_ipv6=host == "::"
    )
