"""Motion gating: run the detector only when something in the picture changed.

A door camera mostly looks at an empty corridor. Each frame is shrunk to a small grey image and
compared with the last one; if fewer than ``threshold`` of its pixels changed by more than
``pixel_delta`` grey levels, the detector is skipped and the previous faces stand. A detection is
forced every ``force_every`` frames anyway, so a person who walks in slowly is still found.
"""

from __future__ import annotations

import cv2
import numpy as np


def gate_for(detector_cfg) -> "MotionGate | None":
    """The gate that ``[detector]`` asks for, or None with motion gating off."""
    if not detector_cfg.motion_gate:
        return None
    return MotionGate(detector_cfg.motion_threshold, detector_cfg.force_every)


class MotionGate:
    def __init__(self, threshold: float = 0.005, force_every: int = 15, pixel_delta: int = 15,
                 size: tuple[int, int] = (64, 48)):
        self.threshold = threshold
        self.force_every = force_every
        self.pixel_delta = pixel_delta
        self.size = size
        self._prev: np.ndarray | None = None
        self._since = 0
        self.skipped = 0

    def moved(self, image: np.ndarray) -> bool:
        """True when the detector should run on this frame."""
        small = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), self.size,
                           interpolation=cv2.INTER_AREA)
        prev, self._prev = self._prev, small
        self._since += 1
        if prev is None or self._since >= self.force_every:
            self._since = 0
            return True
        changed = np.count_nonzero(cv2.absdiff(small, prev) > self.pixel_delta) / small.size
        if changed >= self.threshold:
            self._since = 0
            return True
        self.skipped += 1
        return False
