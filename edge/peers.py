"""Other face detectors, for side-by-side evaluation and benchmarks only.

``OpenCVRes10`` is the seed tutorials' detector: OpenCV's float res10 SSD through ``cv2.dnn``
at 300x300 with confidence 0.5. It needs OpenCV < 5 (OpenCV 5 dropped the Caffe importer).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import ModelError
from edge.types import Box, Face

RES10_FILES = ("deploy.prototxt", "res10_300x300_ssd_iter_140000.caffemodel")


def find_weights_dir(*starts: Path) -> Path | None:
    """A ``weights`` folder holding res10, searched from each start and its parents."""
    for start in starts:
        for d in [start, *start.resolve().parents]:
            for cand in (d / "weights", d / "shared" / "weights"):
                if (cand / RES10_FILES[0]).is_file():
                    return cand
    return None


class OpenCVRes10:
    """res10 SSD, float, via cv2.dnn: ``detect(bgr) -> list[Face]`` like FaceDetector."""

    name = "opencv-res10-float"

    def __init__(self, weights_dir: str | Path, threshold: float = 0.5, threads: int = 1):
        weights_dir = Path(weights_dir)
        if not hasattr(cv2.dnn, "readNetFromCaffe"):
            raise ModelError("this OpenCV has no Caffe importer (removed in OpenCV 5); "
                             "install `opencv-python-headless<5` to score res10 side by side")
        paths = [weights_dir / f for f in RES10_FILES]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ModelError(f"res10 weights not found: {', '.join(missing)}")
        self.net = cv2.dnn.readNetFromCaffe(str(paths[0]), str(paths[1]))
        self.threshold = threshold
        cv2.setNumThreads(threads)

    def detect(self, image: np.ndarray, threshold: float | None = None) -> list[Face]:
        h, w = image.shape[:2]
        self.net.setInput(cv2.dnn.blobFromImage(image, 1.0, (300, 300), (104.0, 177.0, 123.0)))
        out = self.net.forward()[0, 0]
        thr = self.threshold if threshold is None else threshold
        faces = []
        for _, _, score, x1, y1, x2, y2 in out:
            if score < thr:
                continue
            b = Box(x1 * w, y1 * h, x2 * w, y2 * h).clip(w, h)
            if b.width >= 1 and b.height >= 1:
                faces.append(Face(b, float(score)))
        return faces
