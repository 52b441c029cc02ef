"""The MobileNetV2 mask classifier: faces in a frame -> the same faces with a verdict.

The ``.tflite`` says its input size and quantisation; the JSON beside it gives the class labels
and the crop margin the model was trained with, so the device cuts faces the same way.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge.crops import face_crop
from edge.errors import ModelError
from edge.tflite import Model, load_sidecar, sidecar_path
from edge.types import Face
from models import MASK_CLASSIFIER as DEFAULT_MODEL

log = logging.getLogger(__name__)


def optional_classifier(path: str | Path | None, threads: int = 1,
                        edgetpu: bool = False) -> "MaskClassifier | None":
    """The classifier a command was asked for: ``path``; 'none' for none; None for the shipped
    one when it is installed."""
    if path is not None and str(path) == "none":
        return None
    if path is None:
        if not DEFAULT_MODEL.is_file():
            return None
        path = DEFAULT_MODEL
    return MaskClassifier(path, threads=threads, edgetpu=edgetpu)


class MaskClassifier:
    """Load once, then ``classifier.classify(bgr_image, faces) -> faces with verdicts``."""

    def __init__(self, model_path: str | Path = DEFAULT_MODEL, threads: int = 1,
                 edgetpu: bool = False, runtime: str | None = None, batch: bool = True):
        self.model = Model(model_path, threads=threads, edgetpu=edgetpu, runtime=runtime)
        # Several faces in one frame go through the model as one batch where it allows
        # (not on the Edge TPU, whose compiled models have a fixed batch of one).
        self.batch = batch and not edgetpu
        meta = load_sidecar(model_path, "the labels and crop margin")
        self.labels = tuple(meta["labels"])
        self.margin = float(meta["crop"]["margin"])
        # A face is flagged (not properly masked) when p(without_mask) + p(incorrect_mask)
        # reaches this; chosen on val so that masked people are rarely flagged.
        self.flag_threshold = float(meta.get("flag_threshold", 0.5))
        self.meta = meta
        h, w = self.model.input_hw
        if h != w:
            raise ModelError(f"{model_path}: expected a square input, found {h}x{w}")
        self.size = h
        out = self.model.outputs[0].shape
        if out[-1] != len(self.labels):
            raise ModelError(f"{model_path}: {out[-1]} outputs but {len(self.labels)} labels in "
                             f"{sidecar_path(model_path).name}")

    def probabilities_batch(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """Class probabilities (len(faces), classes): one model call for all the faces when
        batching is on and the model allows it, else one call per face."""
        n = len(faces)
        if n > 1 and self.batch:
            try:
                self.model.set_batch(n)
            except ModelError as exc:
                log.info("classifier batching off: %s", exc)
                self.batch = False
        if self.model.batch != n:
            self.model.set_batch(1)
            return np.concatenate([self._call(image, [f]) for f in faces])
        return self._call(image, faces)

    def _call(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """One model call; ``len(faces)`` is the model's batch."""
        if self.model.input.dtype is np.uint8:
            buf = self.model.input_batch()
            for i, face in enumerate(faces):
                face_crop(image, face.box, self.size, self.margin, dst=buf[i])
            del buf  # no view of interpreter memory may outlive invoke()
        else:
            self.model.set_input(np.stack([face_crop(image, f.box, self.size, self.margin)
                                           for f in faces]), batched=True)
        p = self.model.invoke()[0].astype(np.float64)
        if p.min() < 0 or np.any(np.abs(p.sum(axis=1) - 1) > 0.05):  # logits: normalise
            p = np.exp(p - p.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    def verdict(self, p: np.ndarray) -> int:
        """Index of the verdict for probabilities ``p`` (in ``self.labels`` order)."""
        probs = dict(zip(self.labels, p))
        if "with_mask" not in probs:
            return int(np.argmax(p))
        unmasked = [lab for lab in self.labels if lab != "with_mask"]
        if sum(probs[lab] for lab in unmasked) >= self.flag_threshold:
            return self.labels.index(max(unmasked, key=probs.get))
        return self.labels.index("with_mask")

    def classify(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        if not faces:
            return []
        out = []
        for face, p in zip(faces, self.probabilities_batch(image, faces)):
            k = self.verdict(p)
            out.append(replace(face, label=self.labels[k], label_score=float(p[k]),
                               probs={lab: float(v) for lab, v in zip(self.labels, p)}))
        return out
