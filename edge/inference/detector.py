"""The SSD face detector: a BGR image of any size -> faces with boxes in image pixels.

The ``.tflite`` file says its input size and quantisation; the JSON file beside it (same stem)
holds the anchor spec that gives meaning to its output rows, and the default thresholds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from edge.inference import ssd
from edge.inference import verifier
from edge.inference.crops import CropRunner
from edge.errors import ModelError
from edge.inference.tflite import Model, OneModel, load_sidecar, read_spec, sidecar_path
from edge.types import Box, Face, face_arrays

from models import FACE_DETECTOR as DEFAULT_MODEL  # noqa: E402


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


class FaceDetector(OneModel):
    """Load once, then ``detector.detect(bgr_image) -> list[Face]`` per frame.

    ``threshold`` overrides the model's default face score threshold; ``threads`` and
    ``edgetpu`` go to the interpreter.
    """

    def __init__(self, model_path: str | Path = DEFAULT_MODEL, threads: int = 1,
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


MULTIPASS_FORMAT = "maskdoor-multipass/1"


class MultiPassDetector:
    """Several passes of shipped SSD models over one image (input sizes, mirror images), fused
    (``edge.inference.ssd.fuse``): more faces found at the same precision, for the cost of every pass.
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
        self.model = self.passes[0][0].model  # names the detector in logs and `maskdoor check`

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
        return (f"{self.model.kind} {sizes}{mirrored}: {self.pass_count()} passes "
                f"({self.model.runtime})")

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


VERIFIED_FORMAT = "maskdoor-verified/1"
VERIFIER_FORMAT = "maskdoor-verifier/1"


class VerifiedDetector:
    """A detector (``.tflite`` or multi-pass spec) whose proposals a verifier looks at again
    (``edge.inference.verifier``): each proposal above a low score floor is cut as a square window, the
    verifier gives a face logit and the face's box in the window, and the final score mixes
    the detector's score with the verifier's. Finds faces the detector scored too low or boxed
    loosely, for one small crop network call per proposal.

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
        self.model = self.proposer.model  # names the detector in logs and `maskdoor check`

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


def check_fraction(path: Path, spec: dict, key: str, command: str) -> None:
    """``spec[key]`` must be a number from 0 to 1, else a ModelError naming the key and the
    ``python -m convert`` command that chooses it."""
    v = spec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ModelError(f"{path}: '{key}' missing or not a number from 0 to 1 ({v!r}); "
                         f"`python -m convert {command}` chooses it on val")


def load_detector(model_path: str | Path, threads: int = 1, threshold: float | None = None,
                  edgetpu: bool = False, runtime: str | None = None):
    """A FaceDetector for a ``.tflite`` file; for a ``.json`` spec, a MultiPassDetector or a
    VerifiedDetector, as its format says."""
    model_path = Path(model_path)
    cls = FaceDetector
    if model_path.suffix == ".json":
        cls = MultiPassDetector  # which also explains a missing or malformed spec
        try:
            if json.loads(model_path.read_text()).get("format") == VERIFIED_FORMAT:
                cls = VerifiedDetector
        except (OSError, ValueError, AttributeError):
            pass
    return cls(model_path, threads=threads, threshold=threshold, edgetpu=edgetpu, runtime=runtime)
