"""A detector whose proposals a verifier looks at again (format ``maskdoor-verified/1``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import ModelError
from edge.inference import verifier
from edge.inference.crops import CropRunner
from edge.inference.detectors import check_fraction, load_detector, register
from edge.inference.tflite import Model, load_sidecar, read_spec, sidecar_path
from edge.types import Box, Face, face_arrays

VERIFIED_FORMAT = "maskdoor-verified/1"
VERIFIER_FORMAT = "maskdoor-verifier/1"


@register(VERIFIED_FORMAT)
class VerifiedDetector:
    """A detector (``.tflite`` or multi-pass spec) whose proposals a verifier looks at again
    (``edge.inference.verifier``): each proposal above a low score floor is cut as a square
    window, the verifier gives a face logit and the face's box in the window, and the final
    score mixes the detector's score with the verifier's. Finds faces the detector scored too
    low or boxed loosely, for one small crop network call per proposal.

    A JSON spec (``maskdoor-verified/1``) names the detector and the verifier (paths relative
    to the spec), the proposal floor, the mixing weight ``alpha``, the share of the box
    correction applied (``box_step``) and the default threshold
    (chosen on val by ``python -m convert verifier-export``).
    """

    def __init__(self, spec_path: str | Path, threads: int = 1, threshold: float | None = None,
                 edgetpu: bool = False, runtime: str | None = None):
        spec_path = Path(spec_path)
        spec = read_verified_spec(spec_path)
        self.path = spec_path
        self.proposer = load_detector(spec_path.parent / spec["detector"], threads=threads,
                                      edgetpu=edgetpu, runtime=runtime)
        vpath = spec_path.parent / spec["verifier"]
        self.verifier = Model(vpath, threads=threads, edgetpu=edgetpu, runtime=runtime)
        meta = load_sidecar(vpath, "the verifier's window margin")
        if meta.get("format") != VERIFIER_FORMAT:
            raise ModelError(f"{sidecar_path(vpath)}: not a face verifier sidecar (format must be "
                             f"{VERIFIER_FORMAT!r}); export it with `python -m convert "
                             "verifier-export`")
        self.margin = float(meta["window"]["margin"])
        self._logit, self._delta = verifier.output_indices(self.verifier)
        self.runner = CropRunner(self.verifier, batch=not edgetpu)
        self.proposal_threshold = float(spec.get("proposal_threshold", verifier.PROPOSAL_SCORE))
        self.max_proposals = int(spec.get("max_proposals", verifier.MAX_PROPOSALS))
        self.alpha = float(spec["alpha"])
        self.box_step = float(spec.get("box_step", 1.0))
        self.nms_iou = float(spec.get("nms_iou", 0.45))
        self.score_threshold = float(spec["score_threshold"] if threshold is None else threshold)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.proposer.input_hw

    def model_paths(self) -> list[Path]:
        """The models run per image (the verifier once per proposal, counted once)."""
        return [*self.proposer.model_paths(), self.verifier.path]

    def describe(self) -> str:
        """e.g. 'int8 448x448 (litert), verified at 96x96'."""
        h, _ = self.verifier.input_hw
        return f"{self.proposer.describe()}, verified at {h}x{h}"

    def verify(self, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Refined boxes and final scores (after NMS, best first) for proposals in ``image``."""
        boxes, scores = verifier.best_proposals(boxes, scores, self.max_proposals)
        if not len(boxes):
            return boxes, scores
        win = verifier.windows(boxes, self.margin)
        outs = self.runner(image, [Box(*w) for w in win.tolist()])
        return verifier.rescore(boxes, scores, win, outs[self._logit][:, 0], outs[self._delta],
                                self.alpha, self.nms_iou, self.box_step, image.shape[1],
                                image.shape[0])

    def detect(self, image: np.ndarray, threshold: float | None = None,
               lores: np.ndarray | None = None) -> list[Face]:
        """Faces in ``image`` (BGR); ``lores`` goes to the detector."""
        if image is None or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("detect() needs a BGR image of shape (height, width, 3)")
        thr = self.score_threshold if threshold is None else threshold
        props = self.proposer.detect(image, threshold=self.proposal_threshold, lores=lores)
        boxes, scores = self.verify(image, *face_arrays(props))
        keep = scores >= thr
        return [Face(Box(*b.tolist()), float(s)) for b, s in zip(boxes[keep], scores[keep])]


def read_verified_spec(path: str | Path) -> dict:
    """A verified-detector spec, checked: both models exist beside it, the numbers are sane."""
    path = Path(path)
    spec = read_spec(path, VERIFIED_FORMAT, "verified detector", "detector",
                     "'full', 'door', 'accurate'")
    for key in ("detector", "verifier"):
        if not isinstance(spec.get(key), str) or not (path.parent / spec[key]).is_file():
            raise ModelError(f"{path}: '{key}' must name a model file beside the spec "
                             f"({spec.get(key)!r} not found in {path.parent})")
    for key in ("alpha", "score_threshold", *(("box_step",) if "box_step" in spec else ())):
        check_fraction(path, spec, key, "verifier-export")
    return spec
