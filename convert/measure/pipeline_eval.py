"""End-to-end evaluation: detector + mask verdicts against annotated faces.

Definitions (faces >= 40 px wide unless a width range says otherwise; IoU >= 0.5):
- *unmasked* faces are those annotated ``without_mask`` or ``incorrect_mask`` (not properly
  masked); a face is *flagged* when its verdict is ``without_mask`` or ``incorrect_mask``.
- unmasked recall = unmasked faces found and flagged / all unmasked faces.
- masked false alarm = ``with_mask`` faces flagged / ``with_mask`` faces found.
- AP unmasked / AP masked: VOC AP of the pipeline as a detector of that class, each detection
  scored by detector score x the classifier's probability of the class.
- classifier accuracy on ground-truth crops: the annotated boxes cut as the device cuts them.
"""

from __future__ import annotations

import math
import time

import cv2
import numpy as np

from convert.measure.evaluate import DetectionRecords, in_range
from edge.types import face_arrays
from edge.images import read_image

UNMASKED = ("without_mask", "incorrect_mask")
MASKED = ("with_mask",)
CLASSES = ("with_mask", "without_mask", "incorrect_mask")
CLASSIFY_MIN_SCORE = 0.2  # detections below this are not classified (AP is cut there)
BUCKETS = ("<40", "40-80", "80-160", ">=160", ">=40", "door")  # door: >= 10% of image width


def p_unmasked(face) -> float:
    return sum(face.probs.get(k, 0.0) for k in UNMASKED)


class PipelineRecords:
    """Accumulates one pipeline's detections and verdicts over a dataset."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.unmasked = DetectionRecords()
        self.masked = DetectionRecords()
        self.rows = []  # per annotated face: (width, image width, gt label, verdict)
        self.ms = []

    def add(self, sample, faces, ms: float):
        self.ms.append(ms)
        gt, labels = sample.boxes, sample.labels
        boxes, det = face_arrays(faces)
        for records, classes, pick in ((self.unmasked, UNMASKED, p_unmasked),
                                       (self.masked, MASKED, lambda f: f.probs.get("with_mask", 0))):
            k = [i for i, lab in enumerate(labels) if lab in classes]
            scores = np.array([f.score * pick(f) if f.label else 0.0 for f in faces])
            records.add(gt[k] if k else np.zeros((0, 4)), boxes, scores,
                        image_width=sample.width, unlabelled=sample.unlabelled_boxes)
        # verdicts at the operating threshold: one detection per face, greedy by score
        kept = det >= self.threshold
        match = DetectionRecords().add(gt, boxes[kept], det[kept])
        kept_faces = [f for f, keep in zip(faces, kept) if keep]
        for j, lab in enumerate(labels):
            w = gt[j, 2] - gt[j, 0]
            self.rows.append((w, sample.width, lab,
                              kept_faces[match[j]].label if match[j] >= 0 else None))

    def summary(self) -> dict:
        out = {"threshold": self.threshold,
               "ms_median": round(float(np.median(self.ms)), 2) if self.ms else None}
        w = np.array([r[0] for r in self.rows])
        image_w = np.array([r[1] for r in self.rows])
        gt = np.array([r[2] for r in self.rows], dtype=object)
        pred = np.array([r[3] for r in self.rows], dtype=object)
        flagged = np.isin(pred, UNMASKED)
        found = pred != None  # noqa: E711  (object array comparison)
        for rng in BUCKETS:
            m = in_range(rng, w, image_w)
            um, mk = m & np.isin(gt, UNMASKED), m & (gt == "with_mask")
            out[rng] = {
                "unmasked_faces": int(um.sum()), "masked_faces": int(mk.sum()),
                "unmasked_recall": _ratio((um & flagged).sum(), um.sum()),
                "masked_false_alarm": _ratio((mk & found & flagged).sum(), (mk & found).sum()),
                "detector_recall": _ratio((m & found).sum(), m.sum()),
                "confusion": {g: {p: int((m & (gt == g) & (pred == p)).sum())
                                  for p in (*CLASSES, None)} for g in CLASSES},
            }
        m = w >= 40
        inc_gt, inc_pred = m & (gt == "incorrect_mask") & found, m & (pred == "incorrect_mask")
        out[">=40"]["incorrect_mask_recall"] = _ratio((inc_gt & (pred == "incorrect_mask")).sum(),
                                                      inc_gt.sum())
        out[">=40"]["incorrect_mask_precision"] = _ratio((inc_pred & (gt == "incorrect_mask")).sum(),
                                                         inc_pred.sum())
        out["ap_unmasked_>=40"] = round(self.unmasked.average_precision(">=40"), 4)
        out["ap_masked_>=40"] = round(self.masked.average_precision(">=40"), 4)
        out["ap_unmasked_door"] = round(self.unmasked.average_precision("door"), 4)
        out["ap_unmasked"] = round(self.unmasked.average_precision("all"), 4)
        out["ap_masked"] = round(self.masked.average_precision("all"), 4)
        if self.unmasked.unlabelled_faces:  # detections on them: mask state unknown, ignored
            out["audited"] = {
                "ap_unmasked_>=40": round(self.unmasked.average_precision(">=40", True), 4),
                "ap_masked_>=40": round(self.masked.average_precision(">=40", True), 4)}
        return out


def _ratio(a, b):
    return round(float(a) / float(b), 4) if b else None


def run_pipeline(detect, classify, samples, threshold: float) -> dict:
    """``detect(image, threshold) -> faces``; ``classify(image, faces) -> faces`` (or None when
    the detector gives verdicts itself)."""
    rec = PipelineRecords(threshold)
    for s in samples:
        image = read_image(s.image)
        t0 = time.perf_counter()
        faces = detect(image, min(CLASSIFY_MIN_SCORE, threshold))
        if classify is not None:
            faces = classify(image, faces)
        rec.add(s, faces, (time.perf_counter() - t0) * 1000)
    return rec.summary()


def crop_scores(classify, samples, min_width: float = 40.0):
    """Verdicts on annotated boxes: (gt labels, predicted labels, p_unmasked)."""
    from edge.types import Face
    gts, preds, scores = [], [], []
    for s in samples:
        faces = [Face(o.box, 1.0) for o in s.objects if o.box.width >= min_width]
        if not faces:
            continue
        image = read_image(s.image)
        for f, o in zip(classify(image, faces), [o for o in s.objects if o.box.width >= min_width]):
            gts.append(o.label)
            preds.append(f.label)
            scores.append(p_unmasked(f))
    return np.array(gts, dtype=object), np.array(preds, dtype=object), np.array(scores)


def crop_summary(gts, preds) -> dict:
    mask_vs_not = np.mean((gts == "with_mask") == (preds == "with_mask"))
    return {"crops": int(len(gts)), "accuracy_3class": round(float(np.mean(gts == preds)), 4),
            "accuracy_mask_vs_not": round(float(mask_vs_not), 4)}


def roc(gts, scores):
    """ROC of 'not properly masked' against p_unmasked: (fpr, tpr, auc)."""
    pos = np.isin(gts, UNMASKED)
    order = np.argsort(-scores, kind="stable")
    tp = np.concatenate([[0], np.cumsum(pos[order])]) / max(pos.sum(), 1)
    fp = np.concatenate([[0], np.cumsum(~pos[order])]) / max((~pos).sum(), 1)
    return fp, tp, float(np.trapezoid(tp, fp) if hasattr(np, "trapezoid") else np.trapz(tp, fp))


def write_roc_png(curves: dict, path, size: int = 560) -> None:
    """Plot ROC curves {name: (fpr, tpr, auc)} to a PNG with OpenCV (no plotting library)."""
    pad, img = 60, np.full((size, size, 3), 255, np.uint8)
    plot = size - 2 * pad
    to_px = lambda x, y: (int(pad + x * plot), int(size - pad - y * plot))  # noqa: E731
    for t in np.linspace(0, 1, 6):
        cv2.line(img, to_px(t, 0), to_px(t, 1), (230, 230, 230), 1)
        cv2.line(img, to_px(0, t), to_px(1, t), (230, 230, 230), 1)
        cv2.putText(img, f"{t:.1f}", (to_px(t, 0)[0] - 10, size - pad + 18),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{t:.1f}", (pad - 32, to_px(0, t)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(img, to_px(0, 1), to_px(1, 0), (0, 0, 0), 1)
    cv2.line(img, to_px(0, 0), to_px(1, 1), (180, 180, 180), 1, cv2.LINE_AA)
    colours = [(200, 80, 0), (0, 0, 220), (0, 150, 0), (150, 0, 150)]
    for n, (name, (fpr, tpr, auc)) in enumerate(curves.items()):
        pts = np.array([to_px(x, y) for x, y in zip(fpr, tpr)], np.int32)
        cv2.polylines(img, [pts], False, colours[n % 4], 2, cv2.LINE_AA)
        cv2.putText(img, f"{name}  AUC {auc:.3f}", (pad + 10, size - pad - 14 - 18 * n),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, colours[n % 4], 1, cv2.LINE_AA)
    cv2.putText(img, "ROC: not properly masked vs masked (ground-truth crops, >= 40 px)",
                (pad - 40, pad - 25), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "false positive rate", (size // 2 - 60, size - 15), cv2.FONT_HERSHEY_SIMPLEX,
                0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "true positive rate", (8, pad - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def format_pipeline_table(rows: dict) -> str:
    cols = ["unm.rec", "mask.FA", "AP unm", "AP mask", "inc.rec", "inc.prec", "det.rec",
            "door.unm", "door.FA", "ms"]
    lines = ["pipeline (faces >= 40 px)".ljust(40) + "".join(c.rjust(9) for c in cols)]
    for name, r in rows.items():
        b, d = r[">=40"], r["door"]
        vals = [b["unmasked_recall"], b["masked_false_alarm"], r["ap_unmasked_>=40"],
                r["ap_masked_>=40"], b["incorrect_mask_recall"], b["incorrect_mask_precision"],
                b["detector_recall"], d["unmasked_recall"], d["masked_false_alarm"],
                r["ms_median"]]
        lines.append(name.ljust(40) + "".join(
            ("-" if v is None or (isinstance(v, float) and math.isnan(v)) else
             f"{v:.3f}" if isinstance(v, float) else str(v)).rjust(9) for v in vals))
    return "\n".join(lines)
