"""Ports picked for what rollbackd starts: free, and below the kernel's ephemeral range."""

from __future__ import annotations

import socket

import pytest

from rollbackd import ports


def test_a_picked_port_is_free_and_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """An outgoing connection takes its local port from the ephemeral range: one that took a drill's
    port before its scratch container bound it would kill the container ("address in use")."""
    low = ports.ephemeral_low()
    picked = {ports.free_port() for _ in range(20)}
    assert all(max(1024, low - 20_000) <= p < low for p in picked), (low, picked)
    with socket.socket() as taken:  # a port in use is passed over
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        offered = iter([busy, min(picked)])
        monkeypatch.setattr(ports.random, "randrange", lambda a, b: next(offered))
        monkeypatch.setattr(ports, "ephemeral_low", lambda: 65_000)
        assert ports.free_port() == min(picked)


def test_without_the_kernel_range_it_still_finds_a_free_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "ephemeral_low", lambda: 1024)  # no room below it: any free port
    port = ports.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
