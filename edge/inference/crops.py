"""How the device cuts a face for the mask classifier, shared with training in ``convert/``.

A crop is the square centred on the detector's box, with side ``max(w, h) * (1 + 2 * margin)``;
parts outside the frame are filled by repeating the border. One affine warp does crop, pad and
resize in a single pass, and can write straight into the interpreter's input tensor.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.errors import ModelError
from edge.types import Box


def square_crop_box(box: Box, margin: float) -> Box:
    cx, cy = box.center
    side = max(box.width, box.height, 1.0) * (1 + 2 * margin)
    return Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def crop_matrix(box: Box, size: int) -> np.ndarray:
    """Affine map from image pixels to a ``size`` x ``size`` crop of ``box``."""
    sx, sy = size / max(box.width, 1e-6), size / max(box.height, 1e-6)
    return np.array([[sx, 0, -box.x1 * sx], [0, sy, -box.y1 * sy]], np.float32)


def crop(image: np.ndarray, box: Box, size: int, dst: np.ndarray | None = None) -> np.ndarray:
    """Cut ``box`` out of ``image`` into a square of ``size`` pixels (border replicated)."""
    interp = cv2.INTER_AREA if box.width > 2 * size else cv2.INTER_LINEAR
    return cv2.warpAffine(image, crop_matrix(box, size), (size, size), dst=dst, flags=interp,
                          borderMode=cv2.BORDER_REPLICATE)


class CropRunner:
    """Runs one TFLite model (``edge.inference.tflite.Model``, a square image input) on several crops of a
    frame: one call for all of them when ``batch`` is on and the model allows it (not on the Edge
    TPU, whose compiled models have a fixed batch of one), else one call per crop."""

    def __init__(self, model, batch: bool = True, log=None):
        self.model = model
        self.batch = batch
        self.log = log
        self.size = model.input_hw[0]

    def __call__(self, image: np.ndarray, windows: list[Box]) -> list[np.ndarray]:
        """The model's outputs (float, one row per window) for ``windows`` cut from ``image``."""
        n = len(windows)
        if n > 1 and self.batch:
            try:
                self.model.set_batch(n)
            except ModelError as exc:
                if self.log is not None:
                    self.log.info("batching off for %s: %s", self.model.path.name, exc)
                self.batch = False
        if self.model.batch != n:
            self.model.set_batch(1)
            parts = [self._call(image, [w]) for w in windows]
            return [np.concatenate(p) for p in zip(*parts)]
        return self._call(image, windows)

    def _call(self, image: np.ndarray, windows: list[Box]) -> list[np.ndarray]:
        """One model call; ``len(windows)`` is the model's batch."""
        if self.model.input.dtype is np.uint8:
            buf = self.model.input_batch()
            for i, w in enumerate(windows):
                crop(image, w, self.size, dst=buf[i])
            del buf  # no view of interpreter memory may outlive invoke()
        else:
            self.model.set_input(np.stack([crop(image, w, self.size) for w in windows]),
                                 batched=True)
        return self.model.invoke()
