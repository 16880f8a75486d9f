"""Ports for what rollbackd starts on this host (a drill's scratch container)."""

from __future__ import annotations

import random
import socket

_EPHEMERAL = "/proc/sys/net/ipv4/ip_local_port_range"


def free_port(attempts: int = 64) -> int:
    """A free port below the kernel's ephemeral range: an outgoing connection on this host takes its
    local port from that range, and one that took the drill's port between this pick and the scratch
    container's bind would make the container die on "address in use". Falls back to any free port."""
    low = ephemeral_low()
    if low > 2048:
        for _ in range(attempts):
            port = random.randrange(max(1024, low - 20_000), low)
            if bindable(port):
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        any_port: int = s.getsockname()[1]
        return any_port


def ephemeral_low() -> int:
    try:
        with open(_EPHEMERAL) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
