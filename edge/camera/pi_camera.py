"""The Raspberry Pi camera, through picamera2 (installed from apt, not pip)."""

from __future__ import annotations

import cv2
import numpy as np

from edge.camera.sources import FrameSource
from edge.errors import CameraError


class Picamera2Source(FrameSource):
    """The Raspberry Pi camera through picamera2 (from apt: `sudo apt install python3-picamera2`).

    The ISP delivers the main stream at ``width`` x ``height`` for drawing and alerts, and a
    low-resolution stream at ``lores`` (the detector's input size) so that the CPU never resizes
    the full frame; :attr:`lores_frame` holds the latest one (BGR).
    """

    live = True
    name = "picamera2"

    def __init__(self, width: int = 640, height: int = 480, fps: float = 15.0,
                 lores: tuple[int, int] | None = None):
        self.width, self.height, self.fps, self.lores = width, height, fps, lores
        self.cam = None
        self.lores_frame = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError(
                f"picamera2 is not importable ({exc}). On Raspberry Pi OS: `sudo apt install "
                "python3-picamera2` and create the venv with --system-site-packages; elsewhere set "
                "camera.source to 'usb:0', a video file or a folder") from exc
        try:
            cam = Picamera2()
            streams = {"main": {"size": (self.width, self.height), "format": "RGB888"}}
            if self.lores:
                # lores must be YUV420 on a Pi 4; even sizes, no larger than main
                lw, lh = (min(self.lores[1], self.width) // 2 * 2,
                          min(self.lores[0], self.height) // 2 * 2)
                streams["lores"] = {"size": (lw, lh), "format": "YUV420"}
            config = cam.create_video_configuration(
                **streams, controls={"FrameRate": self.fps}, buffer_count=3)
            cam.configure(config)
            cam.start()
        except Exception as exc:  # libcamera raises many kinds; all mean "no camera"
            raise CameraError(f"the Pi camera could not be started ({exc}); is the ribbon cable "
                              "seated and `rpicam-hello --list-cameras` showing it?") from exc
        self.cam = cam

    def read(self) -> np.ndarray | None:
        if self.lores:
            request = self.cam.capture_request()
            try:
                main = request.make_array("main")  # "RGB888" is BGR in memory
                self.lores_frame = cv2.cvtColor(request.make_array("lores"), cv2.COLOR_YUV420p2BGR)
            finally:
                request.release()
            return main
        return self.cam.capture_array("main")

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.stop()
                self.cam.close()
            finally:
                self.cam = None
