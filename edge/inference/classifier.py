"""The MobileNetV2 mask classifier: faces in a frame -> the same faces with a verdict.

The ``.tflite`` says its input size and quantisation; the JSON beside it gives the class labels
and the crop margin the model was trained with, so the device cuts faces the same way. A JSON
*ensemble spec* names several such models whose probabilities are averaged (the shipped default,
``mask_classifier_pair.json``: the 96 px and 160 px models).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.inference.crops import CropRunner, square_crop_box
from edge.defaults import PHOTOS
from edge.errors import ModelError
from edge.inference.tflite import Model, OneModel, load_sidecar, read_spec, sidecar_path
from edge.types import Face, Verdict
from models import classifier_path

log = logging.getLogger(__name__)

ENSEMBLE_FORMAT = "maskdoor-classifier-ensemble/1"


class Classifier(Protocol):
    """What the door loop, ``maskdoor detect`` and the benchmarks may call on a classifier."""

    path: Path  # the file it was loaded from
    labels: tuple[Verdict, ...]

    def classify(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        """The same faces, each with its verdict (``label``), its score and every class's
        probability."""

    def describe(self) -> str:
        """One line for logs and ``maskdoor check``, e.g. 'int8 96x96 (litert)'."""

    def model_paths(self) -> list[Path]:
        """The ``.tflite`` files run per face."""


def optional_classifier(path: str | Path | None, threads: int = 1,
                        edgetpu: bool = False, default: str | Path = PHOTOS.classifier):
    """The classifier a command was asked for: ``path`` (a shipped name, a .tflite or an
    ensemble .json); 'none' for none; None for ``default`` when it is installed."""
    if path is not None and str(path) == "none":
        return None
    if path is None:
        path = classifier_path(default)
        if not path.is_file():
            return None
    return load_classifier(path, threads=threads, edgetpu=edgetpu)


def load_classifier(path: str | Path, threads: int = 1, edgetpu: bool = False,
                    runtime: str | None = None, batch: bool = True):
    """A MaskClassifier for a ``.tflite`` file, an EnsembleClassifier for a ``.json`` spec;
    'pair' and 'single' name the shipped ones."""
    path = classifier_path(path)
    cls = EnsembleClassifier if path.suffix == ".json" else MaskClassifier
    return cls(path, threads=threads, edgetpu=edgetpu, runtime=runtime, batch=batch)


def verdicts(labels, model_path: str | Path) -> tuple[Verdict, ...]:
    """A sidecar's class labels as verdicts; ModelError naming any other label."""
    try:
        return tuple(Verdict(lab) for lab in labels)
    except ValueError:
        raise ModelError(f"{sidecar_path(model_path)}: labels {list(labels)} must each be one of "
                         f"{[v.value for v in Verdict]}") from None


class _Verdicts:
    """Verdicts from class probabilities: ``labels``, ``flag_threshold`` and
    ``probabilities_batch`` come from the subclass."""

    labels: tuple[Verdict, ...]
    flag_threshold: float

    def verdict(self, p: np.ndarray) -> int:
        """Index of the verdict for probabilities ``p`` (in ``self.labels`` order)."""
        probs = dict(zip(self.labels, p))
        if Verdict.WITH_MASK not in probs:
            return int(np.argmax(p))
        unmasked = [lab for lab in self.labels if lab != Verdict.WITH_MASK]
        if sum(probs[lab] for lab in unmasked) >= self.flag_threshold:
            return self.labels.index(max(unmasked, key=probs.get))
        return self.labels.index(Verdict.WITH_MASK)

    def classify(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        if not faces:
            return []
        out = []
        for face, p in zip(faces, self.probabilities_batch(image, faces)):
            k = self.verdict(p)
            out.append(replace(face, label=self.labels[k], label_score=float(p[k]),
                               probs={lab: float(v) for lab, v in zip(self.labels, p)}))
        return out


class MaskClassifier(_Verdicts, OneModel):
    """Load once, then ``classifier.classify(bgr_image, faces) -> faces with verdicts``."""

    def __init__(self, model_path: str | Path, threads: int = 1,
                 edgetpu: bool = False, runtime: str | None = None, batch: bool = True):
        if Path(model_path).suffix == ".json":
            raise ModelError(f"{model_path}: a classifier ensemble spec; load it with "
                             "edge.inference.classifier.load_classifier")
        self.model = Model(model_path, threads=threads, edgetpu=edgetpu, runtime=runtime)
        # Several faces in one frame go through the model as one batch where it allows
        # (not on the Edge TPU, whose compiled models have a fixed batch of one).
        self.runner = CropRunner(self.model, batch and not edgetpu, log)
        meta = load_sidecar(model_path, "the labels and crop margin")
        self.labels = verdicts(meta["labels"], model_path)
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
        p = self.runner(image, [square_crop_box(f.box, self.margin) for f in faces])[0]
        p = p.astype(np.float64)
        if p.min() < 0 or np.any(np.abs(p.sum(axis=1) - 1) > 0.05):  # logits: normalise
            p = np.exp(p - p.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True)

    def describe(self) -> str:
        """e.g. 'int8 96x96 (ai_edge_litert)'."""
        return f"{self.model.kind} {self.size}x{self.size} ({self.model.runtime})"


class EnsembleClassifier(_Verdicts):
    """Several classifiers on the same faces, their probabilities averaged: fewer mistakes than
    either alone for the cost of both. A JSON spec names the member models (paths relative to
    the spec) and the flag threshold of the average (chosen on val by ``python -m convert
    classifier-ensemble``)."""

    def __init__(self, spec_path: str | Path, threads: int = 1, edgetpu: bool = False,
                 runtime: str | None = None, batch: bool = True):
        spec_path = Path(spec_path)
        spec = read_ensemble_spec(spec_path)
        self.path = spec_path
        self.members = [MaskClassifier(spec_path.parent / m, threads=threads, edgetpu=edgetpu,
                                       runtime=runtime, batch=batch) for m in spec["models"]]
        first = self.members[0]
        for m in self.members[1:]:
            if m.labels != first.labels:
                raise ModelError(f"{spec_path}: {m.path.name} has labels {m.labels}, "
                                 f"{first.path.name} {first.labels}; members must agree")
        self.labels = first.labels
        self.flag_threshold = float(spec["flag_threshold"])

    def probabilities_batch(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        return np.mean([m.probabilities_batch(image, faces) for m in self.members], axis=0)

    def model_paths(self) -> list[Path]:
        return [m.path for m in self.members]

    def describe(self) -> str:
        """e.g. 'int8 96x96+160x160, averaged (ai_edge_litert)'."""
        sizes = "+".join(f"{m.size}x{m.size}" for m in self.members)
        first = self.members[0].model
        return f"{first.kind} {sizes}, averaged ({first.runtime})"


def read_ensemble_spec(path: str | Path) -> dict:
    """An ensemble spec, checked: each member names a model file, and the threshold is sane."""
    path = Path(path)
    spec = read_spec(path, ENSEMBLE_FORMAT, "classifier ensemble", "classifier",
                     "'pair', 'single'")
    models = spec.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ModelError(f"{path}: 'models' must be a non-empty list of .tflite file names")
    for m in models:
        if not (path.parent / m).is_file():
            raise ModelError(f"{path}: member model {m} not found beside the spec "
                             f"({path.parent}); keep the spec and its models together")
    thr = spec.get("flag_threshold")
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 < thr < 1:
        raise ModelError(f"{path}: 'flag_threshold' missing or not a number between 0 and 1 "
                         f"({thr!r}); `python -m convert classifier-ensemble` chooses it on val")
    return spec
