"""Frame sources: the camera seam.

Each source opens, reads BGR frames and closes; ``open_source`` picks one from the config's
``camera.source`` string. A new kind of camera is a :class:`FrameSource` subclass (the Pi
camera's is in ``edge.camera.pi_camera``) and one branch in :func:`open_source`. How frames are
read from a source (on a thread, newest first, or in order) is ``edge.camera.readers``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from edge.errors import CameraError
from edge.images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

DEMO_CLIP = Path(__file__).resolve().parents[1] / "data" / "demo_door.mp4"


class FrameSource:
    """Base: ``open()``, ``read() -> image or None at the end``, ``close()``."""

    name = "source"
    live = False      # a camera: frames keep coming, and may be dropped
    fps = 15.0
    lores_frame = None  # the last frame at the detector's input size, if the camera makes one

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()


class OpenCVSource(FrameSource):
    """A USB camera index, a video file, or a network stream URL, through cv2.VideoCapture."""

    def __init__(self, target: int | str, width: int = 640, height: int = 480, fps: float = 15.0,
                 live: bool | None = None, name: str | None = None):
        self.target = target
        self.width, self.height, self.fps = width, height, fps
        self.live = isinstance(target, int) or str(target).split(":")[0] in ("rtsp", "http", "https") \
            if live is None else live
        self.name = name or (f"usb:{target}" if isinstance(target, int) else str(target))
        self.cap = None

    def open(self) -> None:
        if not self.live and not Path(self.target).is_file():
            raise CameraError(f"video file not found: {self.target}")
        cap = cv2.VideoCapture(self.target)
        if not cap.isOpened():
            cap.release()
            hint = ("is it plugged in, and is the user in the 'video' group? `v4l2-ctl "
                    "--list-devices` lists cameras" if isinstance(self.target, int)
                    else "check the URL or file and that OpenCV was built with FFmpeg")
            raise CameraError(f"camera source {self.name} could not be opened: {hint}")
        if isinstance(self.target, int):
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        elif not self.live:
            self.fps = cap.get(cv2.CAP_PROP_FPS) or self.fps
        self.cap = cap

    def read(self) -> np.ndarray | None:
        if self.cap is None:
            raise CameraError(f"{self.name}: read before open")
        ok, image = self.cap.read()
        return image if ok else None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class FolderSource(FrameSource):
    """Images of a folder in name order, one per frame; unreadable files are skipped."""

    def __init__(self, folder: str | Path, fps: float = 15.0):
        self.folder = Path(folder)
        self.name = str(folder)
        self.fps = fps
        self.files: list[Path] = []
        self.pos = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise CameraError(f"image folder not found: {self.folder}")
        self.files = sorted(f for f in self.folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise CameraError(f"{self.folder}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.pos = 0

    def read(self) -> np.ndarray | None:
        while self.pos < len(self.files):
            path = self.files[self.pos]
            self.pos += 1
            image = cv2.imread(str(path))
            if image is not None:
                return image
            log.warning("%s: not a readable image; skipped", path)
        return None


class ArraySource(FrameSource):
    """Images already in memory, one per frame (a benchmark's still scene, a test's clip)."""

    def __init__(self, images, name: str = "memory", fps: float = 15.0):
        self.images = list(images)
        self.name = name
        self.fps = fps
        self.pos = 0

    def open(self) -> None:
        self.pos = 0

    def read(self) -> np.ndarray | None:
        if self.pos >= len(self.images):
            return None
        self.pos += 1
        return self.images[self.pos - 1]


def open_source(camera_cfg, lores: tuple[int, int] | None = None) -> FrameSource:
    """The source named by ``camera.source`` (not opened yet)."""
    src = camera_cfg.source.strip()
    w, h, fps = camera_cfg.width, camera_cfg.height, camera_cfg.fps
    if src == "demo":
        return OpenCVSource(str(DEMO_CLIP), w, h, fps, live=False, name="demo")
    if src == "picamera2":
        from edge.camera.pi_camera import Picamera2Source
        return Picamera2Source(w, h, fps, lores)
    if src.startswith("usb:"):
        try:
            return OpenCVSource(int(src[4:]), w, h, fps, live=True)
        except ValueError:
            raise CameraError(f"camera.source = {src!r}: write usb:N with N the camera index, "
                              "e.g. usb:0") from None
    if "://" in src:
        return OpenCVSource(src, w, h, fps, live=True)
    if Path(src).is_dir():
        return FolderSource(src, fps)
    if Path(src).is_file():
        return OpenCVSource(src, w, h, fps, live=False)
    raise CameraError(f"camera.source = {src!r}: no such file or folder, and not 'picamera2', "
                      "'usb:N', a URL or 'demo'")
