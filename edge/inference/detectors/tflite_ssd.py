"""The SSD face detector on one ``.tflite`` (format ``maskdoor-ssd/1``): a BGR image of any size
-> faces with boxes in image pixels.

The ``.tflite`` file says its input size and quantisation; the JSON file beside it (same stem)
holds the anchor spec that gives meaning to its output rows, and the default thresholds.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import ModelError
from edge.inference import ssd
from edge.inference.detectors import register
from edge.inference.tflite import Model, OneModel, load_sidecar, sidecar_path
from edge.types import Box, Face

SSD_FORMAT = "maskdoor-ssd/1"


def softmax_face(conf: np.ndarray) -> np.ndarray:
    """Face probability from (N, 2) background/face logits."""
    d = conf[:, 1] - conf[:, 0]
    return 1.0 / (1.0 + np.exp(-d))


class SSDDecoder:
    """Raw SSD outputs -> faces: decode against the priors, threshold, NMS, scale to pixels."""

    def __init__(self, spec: ssd.AnchorSpec, score_threshold: float = 0.5, nms_iou: float = 0.45,
                 top_k: int = 400, keep_top_k: int = 200, clip: bool = True):
        self.spec = spec
        self.clip = clip  # False keeps boxes reaching outside the image, as Caffe reports them
        self.priors = ssd.priors(spec)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.top_k = top_k
        self.keep_top_k = keep_top_k

    def __call__(self, loc: np.ndarray, scores: np.ndarray, width: int, height: int,
                 threshold: float | None = None) -> list[Face]:
        return self.select(loc, scores, width, height, threshold)[0]

    def select(self, loc: np.ndarray, scores: np.ndarray, width: int, height: int,
               threshold: float | None = None) -> tuple[list[Face], np.ndarray]:
        """Faces, and the index of the prior (output row) each one came from."""
        thr = self.score_threshold if threshold is None else threshold
        keep = np.flatnonzero(scores >= thr)
        if keep.size == 0:
            return [], keep
        boxes = ssd.decode(loc[keep], self.priors[keep], self.spec.variances)
        kept = ssd.nms(boxes, scores[keep], self.nms_iou, self.top_k, self.keep_top_k)
        scale = np.array([width, height, width, height], np.float32)
        faces, rows = [], []
        for i in kept:
            b = Box(*(boxes[i] * scale).tolist())
            if self.clip:
                b = b.clip(width, height)
            if b.width >= 1 and b.height >= 1:
                faces.append(Face(b, float(scores[keep[i]])))
                rows.append(keep[i])
        return faces, np.asarray(rows, np.int64)


@register(SSD_FORMAT)
class FaceDetector(OneModel):
    """Load once, then ``detector.detect(bgr_image) -> list[Face]`` per frame.

    ``threshold`` overrides the model's default face score threshold; ``threads`` and
    ``edgetpu`` go to the interpreter.
    """

    def __init__(self, model_path: str | Path, threads: int = 1,
                 threshold: float | None = None, nms_iou: float | None = None,
                 edgetpu: bool = False, runtime: str | None = None):
        self.model = Model(model_path, threads=threads, edgetpu=edgetpu, runtime=runtime)
        meta = load_sidecar(model_path, "the anchor spec")
        spec = ssd.AnchorSpec.from_dict(meta["anchors"])
        if tuple(spec.input_size) != self.model.input_hw:
            raise ModelError(f"{model_path}: input {self.model.input_hw} does not match the anchor "
                             f"spec's {spec.input_size} in {sidecar_path(model_path).name}")
        shapes = [o.shape for o in self.model.outputs]
        try:
            self._loc = next(i for i, s in enumerate(shapes) if s[-1] == 4)
            self._conf = next(i for i, s in enumerate(shapes) if s[-1] == 2)
        except StopIteration:
            raise ModelError(f"{model_path}: expected SSD outputs (1, N, 4) and (1, N, 2), "
                             f"found {shapes}") from None
        if shapes[self._loc][1] != spec.count:
            raise ModelError(f"{model_path}: {shapes[self._loc][1]} output rows but the anchor "
                             f"spec describes {spec.count} priors")
        self.meta = meta
        self.decoder = SSDDecoder(spec,
                                  meta.get("score_threshold", 0.5) if threshold is None else threshold,
                                  meta.get("nms_iou", 0.45) if nms_iou is None else nms_iou)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.model.input_hw

    @property
    def score_threshold(self) -> float:
        return self.decoder.score_threshold

    def describe(self) -> str:
        """e.g. 'int8 448x448 (litert)'."""
        h, w = self.input_hw
        return f"{self.model.kind} {w}x{h} ({self.model.runtime})"

    def preprocess(self, image: np.ndarray) -> None:
        """Resize ``image`` (BGR uint8) straight into the interpreter's input tensor."""
        h, w = self.input_hw
        if self.model.input.dtype is not np.uint8 or image.dtype != np.uint8:
            self.model.set_input(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))
            return
        # The interpreter refuses to run while a view of its tensors is alive, so the view
        # is fetched per frame and dropped before invoke().
        buf = self.model.input_buffer()
        cv2.resize(image, (w, h), dst=buf, interpolation=cv2.INTER_LINEAR)
        del buf

    def raw(self) -> tuple[np.ndarray, np.ndarray]:
        outs = self.model.invoke()
        return outs[self._loc][0], softmax_face(outs[self._conf][0])

    def detect(self, image: np.ndarray, threshold: float | None = None,
               lores: np.ndarray | None = None) -> list[Face]:
        """Faces in ``image`` (BGR), boxes in its pixels. ``lores``, the same view already at the
        model's input size (a camera's second stream), is used as the input without resizing."""
        if image is None or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("detect() needs a BGR image of shape (height, width, 3)")
        if lores is not None and lores.shape[:2] == self.input_hw and lores.dtype == np.uint8:
            self.model.set_input(lores)
        else:
            self.preprocess(image)
        loc, scores = self.raw()
        return self.decoder(loc, scores, image.shape[1], image.shape[0], threshold)
