"""A scripted detector and classifier: the real fakes of the :class:`Detector` and
:class:`Classifier` protocols, for driving the door loop without models (tests, and ``bench``'s
timing of the loop's own cost). They find and judge exactly what they are told."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge.types import Face, Verdict


class ScriptedDetector:
    """Finds the faces of its script: the same faces on every call, or ``script(n)``'s on the
    n-th call (0 first). ``calls`` counts the calls."""

    path = Path("scripted-detector")
    score_threshold = 0.5

    def __init__(self, script: Iterable[Face] | Callable[[int], list[Face]] = (),
                 input_hw: tuple[int, int] = (256, 256)):
        if callable(script):
            self._script = script
        else:
            faces = list(script)
            self._script = lambda n: faces
        self.input_hw = input_hw
        self.calls = 0

    def detect(self, image: np.ndarray, threshold: float | None = None,
               lores: np.ndarray | None = None) -> list[Face]:
        faces = list(self._script(self.calls))
        self.calls += 1
        return faces

    def describe(self) -> str:
        return "scripted"

    def model_paths(self) -> list[Path]:
        return []


class ScriptedClassifier:
    """Gives every face ``verdict`` with probability ``score``, or ``script(face)``'s
    (verdict, score). ``calls`` counts the calls."""

    path = Path("scripted-classifier")
    labels = tuple(Verdict)

    def __init__(self, verdict: Verdict = Verdict.WITHOUT_MASK, score: float = 0.9,
                 script: Callable[[Face], tuple[Verdict, float]] | None = None):
        self._script = script or (lambda face: (verdict, score))
        self.calls = 0

    def classify(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        self.calls += 1
        out = []
        for face in faces:
            verdict, score = self._script(face)
            rest = (1 - score) / (len(self.labels) - 1)
            out.append(replace(face, label=verdict, label_score=score,
                               probs={v: score if v == verdict else rest for v in self.labels}))
        return out

    def describe(self) -> str:
        return "scripted"

    def model_paths(self) -> list[Path]:
        return []
