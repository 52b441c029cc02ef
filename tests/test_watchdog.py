"""The service watchdog and the camera: the door loop keeps systemd's watchdog fed while the
camera is slow or being reopened, and stops feeding it (so systemd restarts the service) only
when a call into the camera's driver is stuck. The notify socket is a real datagram socket."""

import logging
import socket
import threading
import time

import numpy as np
import pytest

from edge.door import process_frames
from edge.sinks import SafeSinks
from edge.tracking.policy import DoorPolicy
from edge.inference.fakes import ScriptedDetector
from edge.sdnotify import Notifier
from edge.camera.sources import FrameSource
from edge.camera.readers import LatestFrameGrabber
from edge.tracking.tracker import IoUTracker

WATCHDOG_S = 2.0  # WatchdogSec (the loop waits up to 1 s for a frame, then pings if due)
HUNG_S = 3.0


class Camera(FrameSource):
    """A live source whose reads take ``delay_s`` each; ``freeze`` makes the next read block
    until ``thaw``; ``unplug`` makes reads fail (as an unplugged USB camera's do)."""

    live = True
    name = "testcam"
    fps = 15.0

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.frozen = threading.Event()
        self.thawed = threading.Event()
        self.unplugged = False

    def open(self):
        pass

    def read(self):
        if self.frozen.is_set():
            self.thawed.wait()
        time.sleep(self.delay_s)
        return None if self.unplugged else np.zeros((48, 64, 3), np.uint8)


def watch(tmp_path, camera: Camera, seconds: float, freeze_at: float | None = None) -> list[float]:
    """Run the door loop on ``camera`` for ``seconds``; the times of its watchdog pings."""
    path = str(tmp_path / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(0.1)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6))})
    reader = LatestFrameGrabber(camera, reopen_max_s=0.2, hung_s=HUNG_S).start()
    stop = threading.Event()
    loop = threading.Thread(target=process_frames, args=(
        reader, ScriptedDetector(), None, IoUTracker(), DoorPolicy("d"), SafeSinks([])),
        kwargs={"stop": stop, "notifier": notifier}, daemon=True)
    pings, start = [], time.monotonic()
    loop.start()
    if freeze_at is not None:
        threading.Timer(freeze_at, camera.frozen.set).start()
    try:
        while time.monotonic() - start < seconds:
            try:
                if server.recv(64) == b"WATCHDOG=1":
                    pings.append(time.monotonic() - start)
            except socket.timeout:
                pass
    finally:
        stop.set()
        camera.thawed.set()
        loop.join(timeout=5)
        reader.stop()
        server.close()
    return pings


def longest_gap(pings: list[float], until: float) -> float:
    return max(b - a for a, b in zip([0.0, *pings], [*pings, until]))


@pytest.mark.parametrize("delay_s", [0.0, 0.9 * HUNG_S])
def test_a_slow_camera_keeps_the_watchdog_fed(tmp_path, delay_s):
    pings = watch(tmp_path, Camera(delay_s), 2 * HUNG_S)
    assert longest_gap(pings, 2 * HUNG_S) < WATCHDOG_S, pings


def test_a_camera_being_reopened_keeps_the_watchdog_fed(tmp_path, caplog):
    cam = Camera()
    cam.unplugged = True
    with caplog.at_level(logging.WARNING):
        pings = watch(tmp_path, cam, 2 * HUNG_S)
    assert longest_gap(pings, 2 * HUNG_S) < WATCHDOG_S, pings
    assert any("stopped delivering frames" in r.getMessage() for r in caplog.records)


def test_a_camera_stuck_in_its_driver_lets_the_watchdog_restart_the_service(tmp_path, caplog):
    cam = Camera()
    with caplog.at_level(logging.WARNING, "edge.camera.readers"):
        pings = watch(tmp_path, cam, 0.5 + HUNG_S + 2 * WATCHDOG_S, freeze_at=0.5)
    assert pings and pings[0] < 0.5, "fed while frames came"
    assert 0.5 + HUNG_S - WATCHDOG_S < pings[-1] < 0.5 + HUNG_S + 0.2, pings
    said = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(said) == 1 and "testcam" in said[0].getMessage()
    assert "watchdog restarts maskdoor" in said[0].getMessage()
