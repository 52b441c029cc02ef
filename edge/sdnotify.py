"""systemd's notify protocol (READY, WATCHDOG, STATUS, STOPPING) without a dependency."""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends datagrams to ``$NOTIFY_SOCKET``; does nothing when not run by systemd.

    ``watchdog()`` may be called every frame: it pings at most twice per ``WatchdogSec``.
    """

    def __init__(self, env=os.environ):
        addr = env.get("NOTIFY_SOCKET", "")
        self.addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        pid = env.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            usec = 0
        self.interval = usec / 2e6 if usec else None
        self._last = 0.0
        self._sock = None
        if self.addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, message: str) -> None:
        if self._sock is not None:
            try:
                self._sock.sendto(message.encode(), self.addr)
            except OSError:
                pass  # systemd went away; nothing to tell

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        if self.interval is None:
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")
