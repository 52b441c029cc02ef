"""A second look at each face the SSD proposes: a crop network that rescores it and redraws its box.

The SSD scores every prior from one pass over the whole frame; many of its misses are faces it
did see, at a score below its threshold, or boxed loosely (IoU 0.3-0.5 with the face). The
verifier looks again at a square window around each proposal (``margin`` on each side, like
the mask classifier's crop but wider, so a loose box still has the face inside) and gives a
face logit and the face's box in window coordinates (0..1 across the window). The final score
mixes the two scores geometrically; each box moves part of the way (``step``) to the verifier's
box, and the refined boxes go through NMS again, since two loose boxes on one face now coincide.

The geometry here is shared by training (``convert/verifier.py``) and the device.
"""

from __future__ import annotations

import numpy as np

from edge.inference import ssd
from edge.errors import ModelError

PROPOSAL_SCORE = 0.05  # the detector's score floor for a proposal (a spec's default)
MAX_PROPOSALS = 50     # per image, best first (a spec's default)


def best_proposals(boxes: np.ndarray, scores: np.ndarray, limit: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The ``limit`` best-scored proposals, best first (ties in the detector's order): the cap
    the device applies, and training with it."""
    order = np.argsort(-scores, kind="stable")[:limit]
    return boxes[order], scores[order]


def output_indices(model) -> tuple[int, int]:
    """Indices of the face logit (N, 1) and box delta (N, 4) outputs of a loaded verifier
    (``edge.inference.tflite.Model``); ModelError if it has other outputs."""
    widths = [o.shape[-1] for o in model.outputs]
    if sorted(widths) != [1, 4]:
        raise ModelError(f"{model.path}: expected a face logit (N, 1) and box deltas (N, 4), "
                         f"found outputs {[o.shape for o in model.outputs]}")
    return widths.index(1), widths.index(4)


def windows(boxes: np.ndarray, margin: float) -> np.ndarray:
    """Square windows (N, 4) centred on ``boxes`` (N, 4), side ``max(w, h) * (1 + 2 * margin)``."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = np.maximum(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), 1.0)
    half = (side * (1 + 2 * margin) / 2)[:, None]
    return np.concatenate([c - half, c + half], axis=1)


def to_window(boxes: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Boxes in image pixels -> coordinates relative to their windows (0..1 across)."""
    side = (win[:, 2] - win[:, 0])[:, None]
    return (boxes - np.tile(win[:, :2], 2)) / side


def from_window(rel: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_window`."""
    side = (win[:, 2] - win[:, 0])[:, None]
    return rel * side + np.tile(win[:, :2], 2)


def combine(det_scores: np.ndarray, face_logits: np.ndarray, alpha: float) -> np.ndarray:
    """Final score ``det ** alpha * p_face ** (1 - alpha)``; ``alpha`` 0 trusts the verifier alone."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(face_logits, np.float64)))
    d = np.clip(np.asarray(det_scores, np.float64), 1e-6, 1.0)
    return (d ** alpha * p ** (1.0 - alpha)).astype(np.float32)


def rescore(proposals: np.ndarray, det_scores: np.ndarray, win: np.ndarray,
            face_logits: np.ndarray, deltas: np.ndarray, alpha: float, nms_iou: float,
            step: float = 1.0, width: float | None = None, height: float | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Refined boxes and final scores (best first, after NMS) for one image's proposals.

    ``deltas``: the verifier's box output, the face box minus the proposal, in window units;
    ``step``: how much of it to apply (a noisy regressor does better with a partial step)."""
    if not len(proposals):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    rel = to_window(np.asarray(proposals, np.float32), win) + step * np.asarray(deltas)
    boxes = from_window(rel, win).astype(np.float32)
    if width is not None and height is not None:
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    scores = combine(det_scores, face_logits, alpha)
    keep = ssd.nms(boxes, scores, nms_iou, top_k=len(boxes), keep_top_k=len(boxes))
    return boxes[keep], scores[keep]
