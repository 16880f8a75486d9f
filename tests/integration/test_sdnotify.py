"""systemd's notify protocol: the daemon sends READY=1 once it listens and WATCHDOG=1 periodically
when WATCHDOG_USEC is set (a real AF_UNIX datagram socket stands in for systemd)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from rollbackd import sdnotify
from tests.support.daemon import DaemonProcess, command_service, write_config


def test_notify_is_a_noop_outside_systemd() -> None:
    assert sdnotify.notify("READY=1", env={}) is False
    assert sdnotify.watchdog_interval(env={}) is None
    assert sdnotify.watchdog_interval(env={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval(env={"WATCHDOG_USEC": "30000000"}) == 15.0


def test_daemon_sends_ready_and_watchdog(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(20)
        cfg = write_config(tmp_path, services={"rag": command_service([{"type": "command", "argv": ["/bin/true"]}])})
        daemon = DaemonProcess(cfg, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})
        try:
            daemon.start()
            messages: list[str] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and sum(m == "WATCHDOG=1" for m in messages) < 2:
                messages.append(sock.recv(4096).decode())
            assert messages[0].startswith("READY=1\nSTATUS=listening on 127.0.0.1:")
            assert messages.count("WATCHDOG=1") >= 2
        finally:
            daemon.stop()
        assert sock.recv(4096).decode() == "STOPPING=1"
    assert not os.path.exists(tmp_path / "var")
