"""Detection metrics over an annotated dataset: recall by face width, precision and AP.

Detections are matched to ground truth greedily by score at IoU >= 0.5 (Pascal VOC). Matching is
done once at a low threshold; because greedy matching in score order makes the matches at a
higher threshold a prefix of these, recall and precision at any threshold follow from it.

Width ranges follow COCO's rule so that a range's precision is not punished for faces outside
it: a detection matched to a face outside the range is ignored, and an unmatched detection counts
as a false positive only when its own width is inside the range.

Some visible faces are not boxed in the datasets, so measured precision is pessimistic. Faces found
unlabelled by a hand audit can be passed as ``unlabelled`` boxes: an unmatched detection on one
(IoU >= 0.5) is then neither true nor false positive in the *audited* precision and AP (Pascal
VOC's "difficult" rule); the plain figures are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.inference.ssd import iou_matrix
from edge.types import face_arrays

WIDTH_RANGES = {"all": (0, float("inf")), "<40": (0, 40), "40-80": (40, 80),
                "80-160": (80, 160), ">=160": (160, float("inf")), ">=40": (40, float("inf"))}
# Faces close enough for the door to warn: at least this fraction of the image width (the
# policy's default min_face_width_frac). Ranged by fraction, not pixels, under the same rule.
DOOR_FRACTION = 0.10
FRACTION_RANGES = {"door": (DOOR_FRACTION, float("inf"))}


def in_range(rng: str, width, image_width) -> np.ndarray:
    """Which faces of widths ``width`` (pixels), in images ``image_width`` wide, fall in the
    range ``rng``: a key of WIDTH_RANGES (pixels) or FRACTION_RANGES (of the image width).
    A NaN width is in no range."""
    width = np.asarray(width, float)
    if rng in FRACTION_RANGES:
        lo, hi = FRACTION_RANGES[rng]
        width = width / np.asarray(image_width, float)
    else:
        lo, hi = WIDTH_RANGES[rng]
    return (width >= lo) & (width < hi)


@dataclass
class DetectionRecords:
    """Matches accumulated over images, for one detector."""

    iou_threshold: float = 0.5
    det_score: list = field(default_factory=list)
    det_width: list = field(default_factory=list)
    det_gt_width: list = field(default_factory=list)  # width of matched face, nan if unmatched
    gt_width: list = field(default_factory=list)
    gt_best_score: list = field(default_factory=list)  # score of the detection that found it
    gt_label: list = field(default_factory=list)
    image_width: list = field(default_factory=list)  # per face, to range faces by fraction
    det_image_width: list = field(default_factory=list)
    det_unlabelled: list = field(default_factory=list)  # unmatched, on an audited unlabelled face
    images: int = 0
    unlabelled_faces: int = 0  # audited unlabelled faces in the images added

    def add(self, gt_boxes: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
            gt_labels=None, image_width: float = float("nan"), unlabelled=None) -> np.ndarray:
        """Add one image; returns for each gt the index of its matched detection or -1.
        ``image_width`` (pixels) lets faces be ranged by their fraction of it ("door");
        ``unlabelled`` (N, 4) are audited faces missing from the annotation."""
        gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
        unlabelled = np.asarray([] if unlabelled is None else unlabelled, np.float32).reshape(-1, 4)
        det_boxes = np.asarray(det_boxes, np.float32).reshape(-1, 4)
        det_scores = np.asarray(det_scores, np.float32).reshape(-1)
        order = np.argsort(-det_scores, kind="stable")
        ious = iou_matrix(det_boxes[order], gt_boxes) if len(gt_boxes) and len(order) else None
        # detections on an audited unlabelled face (used only if they match no annotated face)
        on_unlabelled = (iou_matrix(det_boxes, unlabelled).max(axis=1) >= self.iou_threshold
                         if len(unlabelled) and len(det_boxes) else np.zeros(len(det_boxes), bool))
        gt_match = np.full(len(gt_boxes), -1)
        gw = gt_boxes[:, 2] - gt_boxes[:, 0]
        for rank, d in enumerate(order):
            j = -1
            if ious is not None:
                cand = np.where(gt_match < 0, ious[rank], -1.0)
                k = int(np.argmax(cand))
                if cand[k] >= self.iou_threshold:
                    j = k
                    gt_match[k] = d
            self.det_score.append(float(det_scores[d]))
            self.det_width.append(float(det_boxes[d, 2] - det_boxes[d, 0]))
            self.det_gt_width.append(float(gw[j]) if j >= 0 else float("nan"))
            self.det_image_width.append(float(image_width))
            self.det_unlabelled.append(j < 0 and bool(on_unlabelled[d]))
        self.unlabelled_faces += len(unlabelled)
        for k in range(len(gt_boxes)):
            self.gt_width.append(float(gw[k]))
            self.gt_best_score.append(float(det_scores[gt_match[k]]) if gt_match[k] >= 0 else -1.0)
            self.gt_label.append(None if gt_labels is None else gt_labels[k])
            self.image_width.append(float(image_width))
        self.images += 1
        return gt_match

    def add_faces(self, sample, faces) -> np.ndarray:
        """Add one annotated image (a convert.measure.dataset.Sample) and the faces found in it."""
        return self.add(sample.boxes, *face_arrays(faces), sample.labels, sample.width,
                        sample.unlabelled_boxes)

    def _arrays(self, rng: str, audited: bool = False):
        det_iw = self.det_image_width
        in_gt = in_range(rng, self.gt_width, self.image_width)
        s = np.asarray(self.det_score)
        mg = np.asarray(self.det_gt_width)
        matched = ~np.isnan(mg)
        tp = matched & in_range(rng, mg, det_iw)
        fp = ~matched & in_range(rng, self.det_width, det_iw)
        if audited:
            fp &= ~np.asarray(self.det_unlabelled, bool).reshape(-1)
        return in_gt, s, tp, fp

    def count(self, rng: str = "all") -> int:
        return int(self._arrays(rng)[0].sum())

    def recall(self, threshold: float, rng: str = "all") -> float:
        in_gt, *_ = self._arrays(rng)
        found = np.asarray(self.gt_best_score) >= threshold
        n = in_gt.sum()
        return float((found & in_gt).sum() / n) if n else float("nan")

    def precision(self, threshold: float, rng: str = "all", audited: bool = False) -> float:
        """Precision; ``audited``: detections on audited unlabelled faces do not count."""
        _, s, tp, fp = self._arrays(rng, audited)
        keep = s >= threshold
        t, f = (tp & keep).sum(), (fp & keep).sum()
        return float(t / (t + f)) if t + f else float("nan")

    def average_precision(self, rng: str = "all", audited: bool = False) -> float:
        """VOC all-point interpolated AP (``audited`` as in precision)."""
        in_gt, s, tp, fp = self._arrays(rng, audited)
        npos = in_gt.sum()
        if not npos:
            return float("nan")
        order = np.argsort(-s, kind="stable")
        tp_c, fp_c = np.cumsum(tp[order]), np.cumsum(fp[order])
        rec = tp_c / npos
        prec = tp_c / np.maximum(tp_c + fp_c, 1e-12)
        mrec = np.concatenate([[0.0], rec, [1.0]])
        mpre = np.concatenate([[0.0], prec, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        idx = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))

    def threshold_for_precision(self, target: float, rng: str = "all") -> float:
        """The threshold with the most recall whose precision in ``rng`` is at least ``target``.

        Only cuts between different scores count: int8 models give many equal scores, and a
        threshold keeps all of them or none."""
        _, s, tp, fp = self._arrays(rng)
        order = np.argsort(-s, kind="stable")
        tp_c, fp_c = np.cumsum(tp[order]), np.cumsum(fp[order])
        prec = tp_c / np.maximum(tp_c + fp_c, 1)
        ranked = s[order]
        cut = np.append(ranked[1:] != ranked[:-1], True)  # last of each group of equal scores
        ok = np.flatnonzero((prec >= target) & cut)
        if not ok.size:
            return 1.0
        return float(ranked[ok[-1]])

    def summary(self, threshold: float) -> dict:
        out = {"threshold": threshold, "images": self.images, "faces": self.count("all"),
               "recall": {}, "faces_by_width": {}}
        for rng in (*WIDTH_RANGES, *FRACTION_RANGES):
            out["recall"][rng] = round(self.recall(threshold, rng), 4)
            out["faces_by_width"][rng] = self.count(rng)
        out["precision"] = round(self.precision(threshold, "all"), 4)
        out["precision_>=40"] = round(self.precision(threshold, ">=40"), 4)
        out["precision_door"] = round(self.precision(threshold, "door"), 4)
        out["ap"] = round(self.average_precision("all"), 4)
        out["ap_>=40"] = round(self.average_precision(">=40"), 4)
        if self.unlabelled_faces:
            out["audited"] = {
                "unlabelled_faces": self.unlabelled_faces,
                "detections_on_them": int(np.sum(np.asarray(self.det_unlabelled)
                                                  & (np.asarray(self.det_score) >= threshold))),
                "precision_>=40": round(self.precision(threshold, ">=40", audited=True), 4),
                "ap_>=40": round(self.average_precision(">=40", audited=True), 4)}
        return out
