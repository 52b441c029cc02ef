"""How the door loop reads a source: live cameras on their own thread into a one-frame slot
(:class:`LatestFrameGrabber`), so the loop always gets the newest frame and counts what it
dropped, and a camera that vanishes is reopened with back-off and logged once; files and folders
in order (:class:`SyncReader`). :func:`reader_for` picks one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from edge.camera.sources import FrameSource
from edge.types import Frame

log = logging.getLogger(__name__)

# A camera call (read or reopen) pending this long is stuck in its driver, where no thread can
# interrupt it: only a restart helps. Twice OpenCV's own 30 s network read timeout, so a stalled
# stream times out and is reopened long before.
HUNG_CAMERA_S = 60.0
SLOW_CAMERA_S = 10.0  # a pending call this long is worth a warning


class FrameReader(Protocol):
    """What the door loop calls on a reader."""

    dropped: int  # frames the loop never saw

    def start(self) -> "FrameReader":
        """Open the source (raising CameraError when it cannot be) and start reading."""

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None: at the end (``ended``), or none within ``timeout``."""

    @property
    def ended(self) -> bool:
        """No frame will come again: the file or folder is done."""

    @property
    def hung(self) -> bool:
        """No frame can come without a restart of the process."""

    def stop(self) -> None:
        """Stop reading and close the source."""


class SyncReader:
    """Every frame of a file or folder in order (no drops), optionally paced or looped: a None
    from ``get`` is the end."""

    ended = True
    hung = False

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
                          self.source.lores_frame)
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


def reader_for(source: FrameSource, camera_cfg) -> FrameReader:
    """The right reader: a grabber thread for cameras (or paced files), else in-order reads."""
    if source.live or camera_cfg.realtime:
        return LatestFrameGrabber(source, camera_cfg.reopen_max_s, loop=camera_cfg.loop)
    return SyncReader(source, realtime=False, loop=camera_cfg.loop)
