"""The listen address shared by the daemon and its acceptors: one SO_REUSEPORT socket each, so the
kernel spreads new connections evenly (one shared socket would let the first process to wake take a
whole burst of connections). SO_REUSEPORT would also let a second daemon started by mistake share the
port unnoticed, so the daemon first claims the address: an abstract unix socket named after it, which
only one process of the host's network namespace can bind and which goes with that process, even
killed -9 (no file to leave behind, and systemd's PrivateTmp= does not hide it from another unit)."""

from __future__ import annotations

import socket

from rollbackd.errors import ConfigError

_BACKLOG = 1024


def claim(host: str, port: int) -> socket.socket | None:
    """Hold the address for the daemon's life (the socket returned; children do not inherit it)."""
    if port == 0:  # an ephemeral port is this process's alone
        return None
    name = f"rollbackd-listen-{host}:{port}"
    claimed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claimed.bind("\0" + name)
    except OSError:
        claimed.close()
        raise ConfigError(
            "listen", f"another rollbackd with acceptors already listens on {host}:{port} (it holds @{name})"
        ) from None
    return claimed


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
