"""Connecting to RabbitMQ: one timeout for every connection the gateway opens, and one line
that says why a connection failed.

aio-pika waits for the broker's first AMQP frame without a limit of its own: a URL that points
at something else that accepts TCP (a web server, a port that never answers) held a command or
a service's start for minutes. Every connection is made here, so the wait is bounded by
:data:`CONNECT_TIMEOUT_SECONDS` and the failure is said in words a newcomer can act on
(:func:`connect_failure`), never with the URL's password in it.
"""

from __future__ import annotations

import os
from typing import Final
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection, AbstractRobustConnection

from gateway.errors import BrokerUnavailable

#: How long opening a connection may take, handshake included. A RabbitMQ answers in
#: milliseconds on a LAN; across a WAN with TLS, a second or two.
CONNECT_TIMEOUT_SECONDS: Final = 5.0

_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


def broker_address(url: str) -> str:
    """``host:port`` of a broker URL (the default port if it names none), without credentials."""
    parts = urlsplit(url)
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 5672)
    return f"{parts.hostname or 'localhost'}:{port}"


def connect_failure(url: str, exc: BaseException, timeout: float = CONNECT_TIMEOUT_SECONDS) -> str:
    """Why connecting to ``url`` failed with ``exc``, in one line that names the address."""
    address = broker_address(url)
    if isinstance(exc, TimeoutError):
        return (
            f"no AMQP answer from {address} within {timeout:g} s: is that a RabbitMQ port "
            "(broker.url)?"
        )
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        user = urlsplit(url).username or "guest"
        return f"RabbitMQ at {address} refused user {user!r}: wrong user or password (broker.url)"
    if isinstance(exc, OSError | aiormq.exceptions.AMQPConnectionError) and exc.args:
        code = exc.args[0]
        if isinstance(code, int):
            # aiormq keeps a socket error's errno and the call that failed, not its text.
            reason = os.strerror(code) if code > 0 else str(exc.args[-1])
            return f"cannot connect to RabbitMQ at {address}: {reason}"
    if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(exc):
        # The handshake's last step, opening the virtual host, answered with a close.
        parts = urlsplit(url)
        vhost = unquote(parts.path[1:]) or "/"
        return (
            f"RabbitMQ at {address} refused to open virtual host {vhost!r} for user "
            f"{parts.username or 'guest'!r}: does it exist, may the user use it (broker.url)?"
        )
    if isinstance(exc, aiormq.exceptions.AMQPError):
        return (
            f"{address} broke off the AMQP handshake ({exc}): is that a RabbitMQ port (broker.url)?"
        )
    return f"cannot connect to RabbitMQ at {address}: {exc}"


async def connect(url: str, connection_name: str) -> AbstractConnection:
    """A connection, or :class:`BrokerUnavailable` saying why not (within the timeout)."""
    try:
        return await aio_pika.connect(
            url,
            timeout=CONNECT_TIMEOUT_SECONDS,
            client_properties={"connection_name": connection_name},
        )
    except (aiormq.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(connect_failure(url, exc)) from exc


async def connect_robust(url: str, connection_name: str) -> AbstractRobustConnection:
    """A robust connection (it reconnects by itself once made), or :class:`BrokerUnavailable`
    saying why the first attempt failed (within the timeout)."""
    try:
        return await aio_pika.connect_robust(
            url,
            timeout=CONNECT_TIMEOUT_SECONDS,
            client_properties={"connection_name": connection_name},
        )
    except (aiormq.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(connect_failure(url, exc)) from exc
