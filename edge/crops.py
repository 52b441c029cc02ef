"""How the device cuts a face for the mask classifier, shared with training in ``convert/``.

A crop is the square centred on the detector's box, with side ``max(w, h) * (1 + 2 * margin)``;
parts outside the frame are filled by repeating the border. One affine warp does crop, pad and
resize in a single pass, and can write straight into the interpreter's input tensor.
"""

from __future__ import annotations

import cv2
import numpy as np

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


def face_crop(image: np.ndarray, face_box: Box, size: int, margin: float,
              dst: np.ndarray | None = None) -> np.ndarray:
    return crop(image, square_crop_box(face_box, margin), size, dst)
