"""Several passes of SSD models over one image, fused (format ``maskdoor-multipass/1``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edge.errors import ModelError
from edge.inference import ssd
from edge.inference.detectors import check_fraction, register
from edge.inference.detectors.tflite_ssd import FaceDetector
from edge.inference.tflite import read_spec
from edge.types import Box, Face, face_arrays

MULTIPASS_FORMAT = "maskdoor-multipass/1"


@register(MULTIPASS_FORMAT)
class MultiPassDetector:
    """Several passes of shipped SSD models over one image (input sizes, mirror images), fused
    (``edge.inference.ssd.fuse``): more faces found at the same precision, for the cost of
    every pass.
    For photos (the proposals of ``maskdoor detect --model accurate``), not for the door's frame
    rate.

    A JSON spec names the passes' models (paths relative to the spec), whether each is also run
    on the mirrored image and, optionally, the widest face it may report (``max_face``, pixels
    at its own input: a pass at a larger size is there for small faces; see ``ssd.fuse``), the
    per-pass score floor, the fusion IoU and the default threshold (chosen on val by ``python -m
    convert detector-multipass``).
    """

    def __init__(self, spec_path: str | Path, threads: int = 1, threshold: float | None = None,
                 edgetpu: bool = False, runtime: str | None = None):
        spec_path = Path(spec_path)
        spec = read_multipass_spec(spec_path)
        self.path = spec_path
        self.passes = [(FaceDetector(spec_path.parent / p["model"], threads=threads,
                                     edgetpu=edgetpu, runtime=runtime), bool(p.get("flip")))
                       for p in spec["passes"]]
        self.max_faces = [float(p.get("max_face", math.inf)) for p in spec["passes"]]
        self.pass_threshold = float(spec.get("pass_threshold", 0.05))
        self.fusion_iou = float(spec.get("fusion_iou", 0.55))
        self.score_threshold = float(spec["score_threshold"] if threshold is None else threshold)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.passes[0][0].input_hw

    def pass_count(self) -> int:
        return sum(2 if flip else 1 for _, flip in self.passes)

    def model_paths(self) -> list[Path]:
        """The models run per image, once per run (twice for a mirrored pass)."""
        return [d.model.path for d, flip in self.passes for _ in range(1 + flip)]

    def describe(self) -> str:
        """e.g. 'int8 448x448+544x544, mirrored too: 4 passes (litert)'; a pass limited to
        small faces reads '768x768 (faces <= 128 px)'."""
        sizes = "+".join(f"{d.input_hw[1]}x{d.input_hw[0]}"
                         + (f" (faces <= {m:g} px)" if math.isfinite(m) else "")
                         for (d, _), m in zip(self.passes, self.max_faces))
        mirrored = ", mirrored too" if any(f for _, f in self.passes) else ""
        first = self.passes[0][0].model
        return f"{first.kind} {sizes}{mirrored}: {self.pass_count()} passes ({first.runtime})"

    def detect(self, image: np.ndarray, threshold: float | None = None,
               lores: np.ndarray | None = None) -> list[Face]:
        """Faces in ``image`` (BGR); ``lores`` is ignored (every pass resizes the full image)."""
        if image is None or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("detect() needs a BGR image of shape (height, width, 3)")
        thr = self.score_threshold if threshold is None else threshold
        w = image.shape[1]
        mirrored = None
        parts, limits = [], []
        for (det, flip), max_face in zip(self.passes, self.max_faces):
            limits += [max_face * w / det.input_hw[1]] * (1 + flip)  # image pixels
            parts.append(face_arrays(det.detect(image, threshold=self.pass_threshold)))
            if flip:
                if mirrored is None:
                    mirrored = np.ascontiguousarray(image[:, ::-1])
                parts.append(detect_mirrored(det, mirrored, self.pass_threshold))
        boxes, scores = ssd.fuse(parts, self.fusion_iou, limits)
        keep = scores >= thr
        return [Face(Box(*b.tolist()), float(s)) for b, s in zip(boxes[keep], scores[keep])]


def detect_mirrored(det: FaceDetector, mirrored: np.ndarray, threshold: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Faces found on ``mirrored`` (an image flipped left to right) as boxes (N, 4) and scores
    (N,), the boxes mapped back onto the original image."""
    boxes, scores = face_arrays(det.detect(mirrored, threshold=threshold))
    boxes[:, [0, 2]] = mirrored.shape[1] - boxes[:, [2, 0]]
    return boxes, scores


def read_multipass_spec(path: str | Path) -> dict:
    """A multi-pass spec, checked: each pass names a model file that exists."""
    path = Path(path)
    spec = read_spec(path, MULTIPASS_FORMAT, "multi-pass detector", "detector",
                     "'full', 'door', 'accurate'")
    passes = spec.get("passes")
    if not isinstance(passes, list) or not passes or not all(
            isinstance(p, dict) and isinstance(p.get("model"), str) for p in passes):
        raise ModelError(f"{path}: 'passes' must be a non-empty list of {{\"model\": FILE, "
                         "\"flip\": true|false}")
    for p in passes:
        m = p.get("max_face")
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0):
            raise ModelError(f"{path}: pass {p['model']}: 'max_face' must be a positive number of "
                             f"pixels at that model's input ({m!r}), or absent for no limit")
    check_fraction(path, spec, "score_threshold", "detector-multipass")
    for p in passes:
        if not (path.parent / p["model"]).is_file():
            raise ModelError(f"{path}: pass model {p['model']} not found beside the spec")
    return spec
