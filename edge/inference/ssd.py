"""SSD geometry shared by the device and the workstation: priors, box decoding and NMS.

A detector's priors are described by an *anchor spec* (stored beside the model as JSON): for each
feature map the detector predicts from, its size, the step between prior centres and the sizes of
the boxes at every location, all in input pixels. The same numbers drive training
(``convert/``) and decoding on the device, so both always agree on what output row N means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureMapSpec:
    """Priors of one feature map: ``size`` (rows, cols), ``step`` (y, x) and box (w, h) sizes."""

    size: tuple[int, int]
    step: tuple[float, float]
    boxes: tuple[tuple[float, float], ...]
    offset: float = 0.5

    @property
    def count(self) -> int:
        return self.size[0] * self.size[1] * len(self.boxes)


@dataclass(frozen=True)
class AnchorSpec:
    """Everything needed to turn an SSD's raw outputs into boxes for one input size."""

    input_size: tuple[int, int]  # (height, width)
    feature_maps: tuple[FeatureMapSpec, ...]
    variances: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)

    @property
    def count(self) -> int:
        return sum(fm.count for fm in self.feature_maps)

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "variances": list(self.variances),
            "feature_maps": [
                {"size": list(fm.size), "step": list(fm.step), "offset": fm.offset,
                 "boxes": [list(b) for b in fm.boxes]}
                for fm in self.feature_maps
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "AnchorSpec":
        return cls(
            input_size=tuple(d["input_size"]),
            variances=tuple(d.get("variances", (0.1, 0.1, 0.2, 0.2))),
            feature_maps=tuple(
                FeatureMapSpec(size=tuple(fm["size"]), step=tuple(fm["step"]),
                               offset=fm.get("offset", 0.5),
                               boxes=tuple(tuple(b) for b in fm["boxes"]))
                for fm in d["feature_maps"]
            ),
        )


def caffe_prior_boxes(min_size: float, max_size: float | None, aspect_ratios, flip: bool):
    """Box sizes in the order of Caffe's PriorBox layer: min, sqrt(min*max), then each ratio."""
    boxes = [(min_size, min_size)]
    if max_size:
        s = math.sqrt(min_size * max_size)
        boxes.append((s, s))
    for ar in aspect_ratios:
        for r in ((ar, 1.0 / ar) if flip else (ar,)):
            if abs(r - 1.0) > 1e-6:
                boxes.append((min_size * math.sqrt(r), min_size / math.sqrt(r)))
    return tuple(boxes)


def priors(spec: AnchorSpec) -> np.ndarray:
    """All priors as (N, 4) centre-size boxes (cx, cy, w, h), normalised to the input size."""
    in_h, in_w = spec.input_size
    out = []
    for fm in spec.feature_maps:
        rows, cols = fm.size
        cy, cx = np.meshgrid((np.arange(rows) + fm.offset) * fm.step[0],
                             (np.arange(cols) + fm.offset) * fm.step[1], indexing="ij")
        wh = np.asarray(fm.boxes, np.float64)  # (A, 2)
        grid = np.stack([cx, cy], -1).reshape(-1, 1, 2).repeat(len(wh), 1)  # (HW, A, 2)
        sizes = np.broadcast_to(wh, grid.shape)
        out.append(np.concatenate([grid, sizes], -1).reshape(-1, 4))
    p = np.concatenate(out).astype(np.float32)
    p /= np.array([in_w, in_h, in_w, in_h], np.float32)
    return p


def decode(loc: np.ndarray, prior: np.ndarray, variances) -> np.ndarray:
    """SSD centre-size decoding; returns (N, 4) corner boxes (x1, y1, x2, y2), normalised."""
    v = np.asarray(variances, np.float32)
    cxcy = prior[:, :2] + loc[:, :2] * v[:2] * prior[:, 2:]
    wh = prior[:, 2:] * np.exp(np.clip(loc[:, 2:] * v[2:], -10.0, 10.0))
    return np.concatenate([cxcy - wh / 2, cxcy + wh / 2], 1)


def encode(boxes: np.ndarray, prior: np.ndarray, variances) -> np.ndarray:
    """Inverse of :func:`decode`: corner boxes matched to priors -> regression targets."""
    v = np.asarray(variances, np.float32)
    wh = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6)
    cxcy = (boxes[:, :2] + boxes[:, 2:]) / 2
    return np.concatenate([(cxcy - prior[:, :2]) / (v[:2] * prior[:, 2:]),
                           np.log(wh / prior[:, 2:]) / v[2:]], 1).astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of corner boxes a (N, 4) and b (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), -1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), -1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int = 400,
        keep_top_k: int = 200) -> np.ndarray:
    """Greedy NMS as in Caffe's DetectionOutput; returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    keep: list[int] = []
    while order.size and len(keep) < keep_top_k:
        i = order[0]
        keep.append(int(i))
        if order.size == 1:
            break
        ious = iou_matrix(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, np.int64)


def fuse(parts: list[tuple[np.ndarray, np.ndarray]], iou_threshold: float = 0.55,
         max_widths: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fuse the detections of several passes over one image (scales, flips).

    ``parts``: per pass, boxes (N, 4) and scores (N,). Boxes are clustered greedily, best score
    first, at IoU >= ``iou_threshold``; a cluster's box is the score-weighted mean of its boxes and
    its score the mean over the passes of each pass's best score in it (a pass that missed the
    face adds 0), so a face every pass agrees on outranks one a single pass saw.

    ``max_widths`` (per pass, in image pixels; ``inf`` for none) makes the fusion scale-aware: a
    pass run at a larger input size to find small faces drops its boxes wider than its limit,
    and only counts in the mean of the clusters no wider than it."""
    n = len(parts)
    limits = np.full(n, np.inf, np.float32) if max_widths is None else np.asarray(
        max_widths, np.float32)
    kept = []
    for (b, s), limit in zip(parts, limits):
        b = np.asarray(b, np.float32).reshape(-1, 4)
        s = np.asarray(s, np.float32).reshape(-1)
        small = b[:, 2] - b[:, 0] <= limit
        kept.append((b[small], s[small]))
    boxes = np.concatenate([b for b, _ in kept] + [np.zeros((0, 4), np.float32)])
    scores = np.concatenate([s for _, s in kept] + [np.zeros(0, np.float32)])
    if not len(scores):
        return boxes, scores
    source = np.repeat(np.arange(n), [len(s) for _, s in kept])
    ious = iou_matrix(boxes, boxes)
    free = np.ones(len(scores), bool)
    out_boxes, out_scores = [], []
    for i in np.argsort(-scores, kind="stable"):
        if not free[i]:
            continue
        members = np.flatnonzero(free & (ious[i] >= iou_threshold))
        free[members] = False
        w = scores[members]
        box = (boxes[members] * w[:, None]).sum(0) / w.sum()
        best = np.zeros(n, np.float32)
        np.maximum.at(best, source[members], w)
        counted = limits >= box[2] - box[0]  # never empty: a member's pass allows its width
        out_boxes.append(box)
        out_scores.append(best[counted].sum() / counted.sum())
    order = np.argsort(-np.asarray(out_scores), kind="stable")
    return np.asarray(out_boxes, np.float32)[order], np.asarray(out_scores, np.float32)[order]
