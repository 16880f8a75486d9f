"""systemd's notify protocol (Type=notify): READY=1 once listening, WATCHDOG=1 while healthy.
A datagram to $NOTIFY_SOCKET; nothing happens when it is not set (not under systemd)."""

from __future__ import annotations

import os
import socket


def notify(state: str, env: dict[str, str] | None = None) -> bool:
    path = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd set (WATCHDOG_USEC), as systemd recommends; None if unset."""
    e = env if env is not None else os.environ
    usec = e.get("WATCHDOG_USEC")
    pid = e.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
