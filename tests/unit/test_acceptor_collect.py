"""The accepting loop collects garbage by the clock, not at every 60th of its frequent passes."""

from __future__ import annotations

import pytest

from gateway.netdicom import acceptor


def test_the_accepting_loop_collects_every_thirty_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    collections: list[float] = []
    monkeypatch.setattr("gateway.netdicom.acceptor.time.monotonic", lambda: now[0])
    monkeypatch.setattr("gateway.netdicom.acceptor.gc.collect", lambda: collections.append(now[0]))
    server = acceptor._ListeningServer.__new__(acceptor._ListeningServer)  # no socket needed
    for _ in range(65 * 4):  # 65 s of passes, a quarter second apart (exact in binary)
        server.service_actions()
        now[0] += 0.25
    assert collections == [130.0, 160.0]
