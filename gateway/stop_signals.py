"""How the services wait for SIGTERM and SIGINT, and how their loops wait for a stop.

The two signals are blocked before any thread starts (threads, and processes started from
them, inherit the mask) and the main thread collects them with ``sigwait``: a signal handler
would only run when the kernel happens to deliver the signal to the main thread, which a
blocked wait does not guarantee with this many threads.
"""

from __future__ import annotations

import asyncio
import signal


def block_stop_signals() -> set[signal.Signals]:
    """Block SIGTERM and SIGINT in this thread and every thread started after it."""
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    return stop_signals


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop``: True if it is set, False once the time is up (a
    loop's pause that a shutdown cuts short)."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True
