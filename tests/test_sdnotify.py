"""systemd's notify protocol over a real datagram socket, as systemd would receive it."""

import os
import socket
import time

import numpy as np

from edge.door import process_frames
from edge.sinks import SafeSinks
from edge.tracking.policy import DoorPolicy
from edge.inference.fakes import ScriptedDetector
from edge.sdnotify import Notifier
from edge.tracking.tracker import IoUTracker
from edge.types import Frame


def listener(tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    return sock, path


def received(sock):
    out = []
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except socket.timeout:
        return out


def test_ready_status_stopping(tmp_path):
    sock, path = listener(tmp_path)
    n = Notifier({"NOTIFY_SOCKET": path})
    n.ready("watching demo")
    n.stopping()
    assert received(sock) == ["READY=1\nSTATUS=watching demo", "STOPPING=1"]


def test_not_under_systemd_is_silent():
    n = Notifier({})
    assert not n.enabled
    n.ready()
    n.watchdog()


def test_frame_loop_pings_the_watchdog_at_half_the_interval(tmp_path):
    sock, path = listener(tmp_path)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})

    class SlowReader:
        ended = True
        i = 0

        def get(self, timeout=None):
            self.i += 1
            time.sleep(0.02)
            return Frame(np.zeros((8, 8, 3), np.uint8), self.i, 0.0) if self.i <= 30 else None

    t0 = time.monotonic()
    process_frames(SlowReader(), ScriptedDetector(), None, IoUTracker(), DoorPolicy("d"), SafeSinks([]),
                   notifier=n)
    elapsed = time.monotonic() - t0
    pings = [m for m in received(sock) if m == "WATCHDOG=1"]
    # throttled to one ping per half interval (0.1 s), however fast the frames come
    assert 2 <= len(pings) <= elapsed / 0.1 + 1


def test_watchdog_for_another_process_is_ignored(tmp_path):
    sock, path = listener(tmp_path)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    n.watchdog()
    assert received(sock) == []
