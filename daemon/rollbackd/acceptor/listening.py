"""The listen address shared by the daemon and its acceptors: one SO_REUSEPORT socket each, so the
kernel spreads new connections evenly (one shared socket would let the first process to wake take a
whole burst of connections). SO_REUSEPORT would also let a second daemon started by mistake share the
port unnoticed, so the daemon first claims the address with a lock only one process can hold."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import tempfile
from pathlib import Path

from rollbackd.errors import ConfigError

_BACKLOG = 1024


def claim(host: str, port: int) -> int | None:
    """Hold the address's lock for the daemon's life (its fd; released when the process ends)."""
    if port == 0:  # an ephemeral port is this process's alone
        return None
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"rollbackd-listen-{host}-{port}.lock")
    path = Path(tempfile.gettempdir()) / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            "listen", f"another rollbackd with acceptors already listens on {host}:{port} (lock {path} is held)"
        ) from None
    return fd


def bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
