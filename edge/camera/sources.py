"""Frame sources: the camera seam.

Each source opens, reads BGR frames and closes; ``open_source`` picks one from the config's
``camera.source`` string. Live cameras are read on their own thread into a one-frame slot
(:class:`LatestFrameGrabber`), so the loop always gets the newest frame and counts what it
dropped; a camera that vanishes is reopened with back-off and logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from edge.errors import CameraError
from edge.images import IMAGE_EXTENSIONS
from edge.types import Frame

log = logging.getLogger(__name__)

DEMO_CLIP = Path(__file__).resolve().parents[1] / "data" / "demo_door.mp4"
# A camera call (read or reopen) pending this long is stuck in its driver, where no thread can
# interrupt it: only a restart helps. Twice OpenCV's own 30 s network read timeout, so a stalled
# stream times out and is reopened long before.
HUNG_CAMERA_S = 60.0
SLOW_CAMERA_S = 10.0  # a pending call this long is worth a warning


class FrameSource:
    """Base: ``open()``, ``read() -> image or None at the end``, ``close()``."""

    name = "source"
    live = False      # a camera: frames keep coming, and may be dropped
    fps = 15.0

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


def open_source(camera_cfg, lores: tuple[int, int] | None = None) -> FrameSource:
    """The source named by ``camera.source`` (not opened yet)."""
    src = camera_cfg.source.strip()
    w, h, fps = camera_cfg.width, camera_cfg.height, camera_cfg.fps
    if src == "demo":
        return OpenCVSource(str(DEMO_CLIP), w, h, fps, live=False, name="demo")
    if src == "picamera2":
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


class SyncReader:
    """Every frame of a file or folder in order (no drops), optionally paced or looped."""

    def __init__(self, source: FrameSource, realtime: bool = False, loop: bool = False):
        self.source, self.realtime, self.loop = source, realtime, loop
        self.index = 0
        self.dropped = 0
        self._next_t = None

    def start(self):
        self.source.open()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        image = self.source.read()
        if image is None and self.loop:
            self.source.close()
            self.source.open()
            image = self.source.read()
        if image is None:
            return None
        if self.realtime:
            now = time.monotonic()
            self._next_t = (self._next_t or now) + 1.0 / self.source.fps
            if self._next_t > now:
                time.sleep(self._next_t - now)
        self.index += 1
        return Frame(image, self.index, time.time(), self.source.name)

    def stop(self):
        self.source.close()


class LatestFrameGrabber:
    """Reads a live source on its own thread into a one-frame slot.

    ``get()`` returns the newest frame not yet handed out (waiting up to ``timeout``), so the
    loop never works on a stale frame; frames overwritten unseen are counted in ``dropped``.
    A read failure closes the source and reopens it with exponential back-off (up to
    ``reopen_max_s``), logging once per outage. A read or reopen still pending after ``hung_s``
    makes :attr:`hung` true (logged once), so the door loop stops feeding the service watchdog
    and systemd restarts the service. File sources paced at their fps behave the same way
    (``camera.realtime``), and end with ``None``.
    """

    def __init__(self, source: FrameSource, reopen_max_s: float = 30.0, loop: bool = False,
                 hung_s: float = HUNG_CAMERA_S):
        self.source = source
        self.hung_s = hung_s
        self._busy_since: float | None = None  # when the pending camera call began
        self._stall_said = 0  # 1: said it is slow, 2: said it is hung
        self.reopen_max_s = reopen_max_s
        self.loop = loop
        self.dropped = 0
        self.captured = 0
        self.reopens = 0
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self.outage = False

    def start(self):
        self.source.open()  # the first open fails loudly: a wrong source is a config error
        self._thread.start()
        return self

    def _run(self):
        backoff = 0.5
        period = 1.0 / self.source.fps
        next_t = time.monotonic()
        while not self._stop.is_set():
            self._busy_since = time.monotonic()
            try:
                image = self.source.read()
            except Exception as exc:  # a driver error is an outage like any other
                log.debug("read failed: %s", exc)
                image = None
            finally:
                self._busy_since = None
            if image is None and not self.source.live:
                if self.loop:
                    self.source.close()
                    self.source.open()
                    continue
                with self._cond:
                    self._ended = True
                    self._cond.notify_all()
                return
            if image is None:
                if not self.outage:
                    log.warning("camera %s stopped delivering frames; reopening with back-off "
                                "(up to %.0f s between tries)", self.source.name, self.reopen_max_s)
                    self.outage = True
                self.source.close()
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.reopen_max_s)
                self._busy_since = time.monotonic()
                try:
                    self.source.open()
                    self.reopens += 1
                except Exception as exc:
                    log.debug("reopen failed: %s", exc)
                finally:
                    self._busy_since = None
                continue
            if self._stall_said:
                log.warning("camera %s is delivering frames again", self.source.name)
                self._stall_said = 0
            if self.outage:
                log.warning("camera %s is back", self.source.name)
                self.outage, backoff = False, 0.5
            self.captured += 1
            frame = Frame(image, self.captured, time.time(), self.source.name,
                          getattr(self.source, "lores_frame", None))
            with self._cond:
                if self._slot is not None:
                    self.dropped += 1
                self._slot = frame
                self._cond.notify_all()
            if not self.source.live:  # a file standing in for a camera: keep its pace
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_t = time.monotonic()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest unseen frame; None when a file ended or on timeout (check ``ended``)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._slot is not None or self._ended, timeout):
                return None
            frame, self._slot = self._slot, None
            return frame

    @property
    def ended(self) -> bool:
        return self._ended and self._slot is None

    @property
    def hung(self) -> bool:
        """True when no frame can come without a restart: a camera call stuck for ``hung_s``,
        or the capture thread gone. A camera that is slow or being reopened is not hung."""
        if not self._thread.is_alive() and not self._ended and self._thread.ident is not None:
            if self._stall_said < 2 and not self._stop.is_set():
                self._stall_said = 2
                log.error("camera %s: the capture thread has stopped; the service watchdog "
                          "restarts maskdoor", self.source.name)
            return True
        since = self._busy_since
        pending = time.monotonic() - since if since is not None else 0.0
        if pending >= self.hung_s and self._stall_said < 2:
            self._stall_said = 2
            log.error("camera %s: a call into its driver has been stuck for %.0f s and cannot "
                      "be interrupted; the service watchdog restarts maskdoor (without systemd, "
                      "restart it by hand)", self.source.name, pending)
        elif pending >= min(SLOW_CAMERA_S, self.hung_s / 2) and self._stall_said < 1:
            self._stall_said = 1
            log.warning("camera %s has given no frame for %.0f s (its driver has not returned); "
                        "waiting, and restarting the service if it is still stuck after %.0f s",
                        self.source.name, pending, self.hung_s)
        return pending >= self.hung_s

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.source.close()


def reader_for(source: FrameSource, camera_cfg):
    """The right reader: a grabber thread for cameras (or paced files), else in-order reads."""
    if source.live or camera_cfg.realtime:
        return LatestFrameGrabber(source, camera_cfg.reopen_max_s, loop=camera_cfg.loop)
    return SyncReader(source, realtime=False, loop=camera_cfg.loop)
