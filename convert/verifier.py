"""Train the face verifier (``edge/inference/verifier.py``): a second look at each proposal of the SSD.

Proposals are the int8 detector's own faces at a low score floor, on the split's photos; on the
train split, each annotated face also gives jittered boxes, so the box head sees more loose
boxes than the detector happens to draw on photos it was trained on. Each proposal is cut once
as its verifier window and stored with its targets:

- face (1) if it overlaps an annotated face at IoU >= ``POSITIVE_IOU``, background (0) below
  ``NEGATIVE_IOU``, not scored in between, nor on a likely unannotated face (an ignore file of
  ``detector-pseudo-ignore``);
- the box of the face it overlaps most (IoU >= ``NEGATIVE_IOU``), in window units, minus the
  proposal's.

Epochs are selected on val end to end: the val proposals rescored and refined exactly as on the
device (``edge.inference.verifier.rescore``), then recall of faces >= 40 px at val precision 0.90 plus 0.1 x
AP, as for the detectors.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from convert.augment import photometric  # noqa: E402
from convert.classifier import MOBILENET_H5, mobilenet_features  # noqa: E402
from convert.training import RunRecord, ShuffledBatches, fit_and_select  # noqa: E402
from edge.inference.crops import crop  # noqa: E402
from convert.measure.dataset import load_voc_dataset  # noqa: E402
from convert.measure.evaluate import DetectionRecords  # noqa: E402
from edge.inference.ssd import iou_matrix  # noqa: E402
from edge.types import Box, face_arrays  # noqa: E402
from edge.inference.verifier import (MAX_PROPOSALS, PROPOSAL_SCORE, best_proposals,  # noqa: E402
                           output_indices, rescore, to_window, windows)

log = logging.getLogger("convert.verifier")

MARGIN = 0.3          # window side = max(w, h) * (1 + 2 * MARGIN)
SIZE = 96
POSITIVE_IOU = 0.4
NEGATIVE_IOU = 0.3
ALPHAS = (0.0, 0.25, 0.5, 0.75)
BOX_STEPS = (0.5, 1.0)


@dataclass
class ProposalSet:
    crops: np.ndarray      # (N, SIZE, SIZE, 3) uint8 BGR windows
    image: np.ndarray      # (N,) index of the photo
    boxes: np.ndarray      # (N, 4) proposal, image pixels
    det_score: np.ndarray  # (N,) detector score (1 for jittered annotated faces)
    label: np.ndarray      # (N,) 1 face, 0 background, -1 not scored
    delta: np.ndarray      # (N, 4) target box minus proposal, window units
    has_box: np.ndarray    # (N,) bool: delta is a target
    gt: list               # per photo: annotated boxes (M, 4)
    width: np.ndarray      # per photo: width in pixels

    def arrays(self) -> dict:
        d = {k: getattr(self, k) for k in ("crops", "image", "boxes", "det_score", "label",
                                            "delta", "has_box", "width")}
        d["gt"] = np.concatenate([*self.gt, np.zeros((0, 4), np.float32)])
        d["gt_count"] = np.array([len(g) for g in self.gt])
        return d

    @classmethod
    def load(cls, path: Path) -> "ProposalSet":
        z = np.load(path)
        ends = np.cumsum(z["gt_count"])
        gt = np.split(z["gt"], ends[:-1]) if len(ends) else []
        return cls(z["crops"], z["image"], z["boxes"], z["det_score"], z["label"], z["delta"],
                   z["has_box"], gt, z["width"])


def jitter_boxes(rng, gt: np.ndarray, per_face: int) -> np.ndarray:
    """``per_face`` boxes around each annotated face, off in position, size and shape."""
    if not len(gt) or not per_face:
        return np.zeros((0, 4), np.float32)
    g = np.repeat(gt, per_face, axis=0)
    w, h = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    cx = (g[:, 0] + g[:, 2]) / 2 + rng.uniform(-0.2, 0.2, len(g)) * w
    cy = (g[:, 1] + g[:, 3]) / 2 + rng.uniform(-0.2, 0.2, len(g)) * h
    s = np.exp(rng.uniform(-0.3, 0.3, len(g)))
    a = np.exp(rng.uniform(-0.15, 0.15, len(g)))
    nw, nh = w * s * a / 2, h * s / a / 2
    return np.stack([cx - nw, cy - nh, cx + nw, cy + nh], 1).astype(np.float32)


def build_proposals(detector_path: Path, data_dir: Path, split: str, jitter: int = 0,
                    ignore: dict | None = None, threads: int = 2, seed: int = 0) -> ProposalSet:
    """Proposals of the detector (a ``.tflite`` or a multi-pass spec) on ``split``, at most
    ``MAX_PROPOSALS`` per photo as on the device, plus ``jitter`` boxes per annotated face; cut
    as verifier windows, with their targets."""
    from convert.detector import image_key
    from edge.inference.detectors import load_detector

    det = load_detector(detector_path, threads=threads)
    rng = np.random.default_rng(seed)
    crops, image, boxes, scores, labels, deltas, has_box, gts, widths = ([] for _ in range(9))
    samples = load_voc_dataset(data_dir / "detect", split)
    for s in samples:
        img = cv2.imread(str(s.image))
        if img is None:
            log.warning("skipping unreadable %s", s.image)
            continue
        gt = s.boxes
        b, sc = best_proposals(*face_arrays(det.detect(img, threshold=PROPOSAL_SCORE)),
                               MAX_PROPOSALS)
        jb = jitter_boxes(rng, gt, jitter)
        b, sc = np.concatenate([b, jb]), np.concatenate([sc, np.ones(len(jb), np.float32)])
        k = len(gts)
        gts.append(gt)
        widths.append(img.shape[1])
        if not len(b):
            continue
        win = windows(b, MARGIN)
        lab = np.zeros(len(b), np.int64)
        d = np.zeros((len(b), 4), np.float32)
        hb = np.zeros(len(b), bool)
        if len(gt):
            ious = iou_matrix(b, gt)
            best, j = ious.max(1), ious.argmax(1)
            lab[best >= POSITIVE_IOU] = 1
            lab[(best >= NEGATIVE_IOU) & (best < POSITIVE_IOU)] = -1
            hb = best >= NEGATIVE_IOU
            d = (to_window(gt[j], win) - to_window(b, win)).astype(np.float32)
            d[~hb] = 0
        extra = np.asarray((ignore or {}).get(image_key(s.image), []), np.float32).reshape(-1, 4)
        if len(extra):
            lab[(lab == 0) & (iou_matrix(b, extra).max(1) >= NEGATIVE_IOU)] = -1
        for w in win:
            crops.append(crop(img, Box(*w.tolist()), SIZE))
        image += [k] * len(b)
        boxes.append(b)
        scores.append(sc)
        labels.append(lab)
        deltas.append(d)
        has_box.append(hb)
    out = ProposalSet(np.stack(crops), np.array(image), np.concatenate(boxes),
                      np.concatenate(scores), np.concatenate(labels), np.concatenate(deltas),
                      np.concatenate(has_box), gts, np.array(widths))
    log.info("%s: %d photos, %d proposals: %d faces, %d background, %d not scored", split,
             len(gts), len(out.label), (out.label == 1).sum(), (out.label == 0).sum(),
             (out.label == -1).sum())
    return out


def proposal_sets(detector: Path, data_dir: Path, out_dir: Path, ignore: Path | None = None
                  ) -> tuple[Path, Path]:
    """The train and val proposal sets of ``detector``, built once into ``out_dir``."""
    from convert.detector import read_ignore
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "val"):
        path = out_dir / f"proposals_{split}.npz"
        if not path.is_file():
            train = split == "train"
            ps = build_proposals(detector, data_dir, split, jitter=2 if train else 0,
                                 ignore=read_ignore(ignore) if ignore and train else None)
            np.savez(path, **ps.arrays())
        paths.append(path)
    return paths[0], paths[1]


def score_loss(y_true, y_pred):
    """Binary cross-entropy on the face logit; y_true = (label, weight)."""
    y, w = y_true[:, :1], y_true[:, 1:2]
    return keras.ops.mean(w * keras.ops.binary_crossentropy(y, y_pred, from_logits=True), -1)


def box_loss(y_true, y_pred):
    """Huber loss on the box deltas, for proposals with a target; y_true = (4 deltas, weight)."""
    d, w = y_true[:, :4], y_true[:, 4:5]
    err = keras.ops.abs(y_pred - d)
    hub = keras.ops.where(err < 0.05, 0.5 * err ** 2 / 0.05, err - 0.025)
    return keras.ops.sum(w * hub, -1) * 10.0


class ProposalBatches(ShuffledBatches):
    def __init__(self, ps: ProposalSet, batch_size: int, seed: int, train: bool):
        self.ps = ps
        super().__init__(len(ps.label), batch_size, seed, train)

    def __getitem__(self, i):
        idx = self.indices(i)
        x = self.ps.crops[idx].copy()
        d = self.ps.delta[idx].copy()
        if self.train:
            for n in range(len(idx)):
                if self.rng.random() < 0.5:  # mirror the window, and the box deltas with it
                    x[n] = x[n, :, ::-1]
                    d[n] = [-d[n, 2], d[n, 1], -d[n, 0], d[n, 3]]
                x[n] = photometric(self.rng, x[n])
        lab = self.ps.label[idx]
        ys = np.stack([np.maximum(lab, 0), (lab >= 0)], 1).astype(np.float32)
        yb = np.concatenate([d, self.ps.has_box[idx, None]], 1).astype(np.float32)
        return x.astype(np.float32), {"face_logit": ys, "box_delta": yb}


def build_model(size: int = SIZE, weights: Path | str | None = None) -> keras.Model:
    """MobileNetV2 on a BGR window: a face logit (1) and box deltas (4), two outputs so each
    gets its own int8 scale."""
    inp, x = mobilenet_features(size, weights)
    x = keras.layers.Dropout(0.1)(x)
    logit = keras.layers.Dense(1, name="face_logit")(x)
    box = keras.layers.Dense(4, name="box_delta", kernel_initializer="zeros")(x)
    return keras.Model(inp, [logit, box], name=f"face_verifier_{size}")


def evaluate(ps: ProposalSet, logits: np.ndarray, deltas: np.ndarray, alpha: float,
             step: float = 1.0, nms_iou: float = 0.45) -> dict:
    """Val figures of the rescored, refined proposals (faces >= 40 px, as the detectors')."""
    rec = DetectionRecords()
    for k, gt in enumerate(ps.gt):
        m = ps.image == k
        b, s = rescore(ps.boxes[m], ps.det_score[m], windows(ps.boxes[m], MARGIN),
                       logits[m], deltas[m], alpha, nms_iou, step)
        rec.add(gt, b, s, image_width=float(ps.width[k]))
    t = rec.threshold_for_precision(0.90, ">=40")
    return {"alpha": alpha, "box_step": step, "threshold": round(t, 4),
            "recall_40": round(rec.recall(t, ">=40"), 4),
            "precision_40": round(rec.precision(t, ">=40"), 4),
            "ap_40": round(rec.average_precision(">=40"), 4),
            "recall_door": round(rec.recall(t, "door"), 4)}


def baseline(ps: ProposalSet) -> dict:
    """The detector alone on the same proposals (no rescoring, no refinement)."""
    n = len(ps.label)
    return evaluate(ps, np.full(n, 50.0, np.float32), np.zeros((n, 4), np.float32), 1.0)


def predict(model, ps: ProposalSet) -> tuple[np.ndarray, np.ndarray]:
    logit, box = model.predict(ProposalBatches(ps, 128, 0, train=False), verbose=0)
    return logit[:, 0], box


def train(train_set: Path, val_set: Path, weights_dir: Path, out_dir: Path, epochs: int = 5,
          batch_size: int = 32, lr: float = 3e-4, seed: int = 0, init: Path | None = None) -> dict:
    """Train on ``train_set``, keep the epoch whose val proposals, rescored and refined, give
    the most recall of faces >= 40 px at precision 0.90 plus 0.1 x AP (best over the alpha and
    box step candidates). 1e-3 collapsed to a constant output here; 3e-4 trains."""
    record = RunRecord(out_dir)
    keras.utils.set_random_seed(seed)
    tr, va = ProposalSet.load(train_set), ProposalSet.load(val_set)
    model = build_model(SIZE, weights_dir / MOBILENET_H5)
    if init is not None:
        model.load_weights(init)
    log.info("train %d proposals (%d faces, %d background), val %d; val detector alone: %s",
             len(tr.label), (tr.label == 1).sum(), (tr.label == 0).sum(), len(va.label),
             json.dumps(baseline(va)))

    def validate(model):
        logits, deltas = predict(model, va)
        rows = [evaluate(va, logits, deltas, a, b) for a in ALPHAS for b in BOX_STEPS]
        scored = va.label >= 0
        figures = {"val_proposal_accuracy": round(float(np.mean(
                       (logits[scored] > 0) == (va.label[scored] == 1))), 4),
                   "val": rows}
        top = max(rows, key=lambda r: (r["recall_40"] + 0.1 * r["ap_40"], r["ap_40"]))
        return figures, top["recall_40"] + 0.1 * top["ap_40"], {"selected": top}

    return fit_and_select(model, ProposalBatches(tr, batch_size, seed, True),
                          {"face_logit": score_loss, "box_delta": box_loss}, lr, epochs, record,
                          validate, name="verifier")


def int8_outputs(model_path: Path, ps: ProposalSet, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Face logits and box deltas of an exported verifier on the stored windows."""
    from edge.inference.tflite import Model
    q = Model(model_path, threads=os.cpu_count() or 1)
    li, di = output_indices(q)
    logits, deltas = [], []
    for i in range(0, len(ps.label), batch):
        x = ps.crops[i:i + batch]
        q.set_batch(len(x))
        q.set_input(x, batched=True)
        out = q.invoke()
        logits.append(out[li][:, 0])
        deltas.append(out[di])
    return np.concatenate(logits), np.concatenate(deltas)


def export(run_dir: Path, train_set: Path, detector: Path, data_dir: Path, out_path: Path,
           spec_path: Path, calibration: int = 400) -> dict:
    """Quantise a run's selected verifier to int8 and write it with its sidecar, then the
    ``maskdoor-verified/1`` spec over ``detector`` (``write_spec``). Calibration uses windows of
    ``train_set``."""
    from convert.quantize import to_int8_tflite
    from edge.inference.detectors.verified import VERIFIER_FORMAT

    check_spec_members(spec_path, detector, out_path)
    best = json.loads((run_dir / "best.json").read_text())
    tr = ProposalSet.load(train_set)
    va = build_proposals(detector, data_dir, "val")
    model = build_model(SIZE, None)
    model.load_weights(run_dir / "best.weights.h5")
    pick = np.random.default_rng(0).choice(len(tr.label), min(calibration, len(tr.label)),
                                           replace=False)
    to_int8_tflite(model, lambda: iter(tr.crops[pick]), out_path)
    logits, deltas = int8_outputs(out_path, va)
    f_logits, f_deltas = predict(model, va)
    lab = va.label >= 0
    meta = {"format": VERIFIER_FORMAT,
            "architecture": f"MobileNetV2 alpha 1.0, {SIZE}x{SIZE}, ImageNet backbone; outputs "
                            "face logit (N, 1) and box deltas (N, 4), window units",
            "input": {"color": "bgr", "range": "0-255"},
            "window": {"margin": MARGIN, "rule": "square, side = max(w, h) * (1 + 2 * margin), "
                       "centred on the proposal"},
            "training": {"data": "proposals of the int8 detector (score >= "
                         f"{PROPOSAL_SCORE}) on shared/data detect/ train, plus jittered "
                         "annotated boxes", "selected_on": "val split", "epoch": best["epoch"],
                         "val_float": best["selected"],
                         "val_int8_float_face_agreement": round(float(np.mean(
                             (logits[lab] > 0) == (f_logits[lab] > 0))), 4),
                         "val_int8_float_box_mae": round(float(np.mean(np.abs(
                             deltas - f_deltas))), 4),
                         "calibration_windows": len(pick)}}
    out_path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    log.info("exported %s (%.1f MB)", out_path, out_path.stat().st_size / 1e6)
    return write_spec(out_path, detector, data_dir, spec_path, va, (logits, deltas))


def check_spec_members(spec_path: Path, detector: Path, verifier: Path) -> None:
    """The detector (a ``.tflite`` with its anchor sidecar, or a multi-pass spec) and the
    verifier must sit in the spec's folder; ValueError otherwise."""
    from convert import check_in_folder, check_members
    check_in_folder(spec_path, verifier, "the verifier")
    if detector.suffix == ".json":
        check_in_folder(spec_path, detector, "the detector")
    else:
        check_members(spec_path, [detector], "the detector", "the anchor spec")


def write_spec(verifier_path: Path, detector: Path, data_dir: Path, spec_path: Path,
               va: ProposalSet | None = None, outputs: tuple | None = None) -> dict:
    """The ``maskdoor-verified/1`` spec for an int8 verifier over ``detector`` (a ``.tflite`` or
    a multi-pass spec): ``alpha``, box step and threshold chosen on ``detector``'s val
    proposals (most recall of faces >= 40 px at precision 0.90, then AP). ``va`` and the
    verifier's ``outputs`` on it are computed when not given."""
    from edge.inference.detectors.verified import VERIFIED_FORMAT, read_verified_spec

    check_spec_members(spec_path, detector, verifier_path)
    va = va if va is not None else build_proposals(detector, data_dir, "val")
    logits, deltas = outputs if outputs is not None else int8_outputs(verifier_path, va)
    rows = [evaluate(va, logits, deltas, a, b) for a in ALPHAS for b in BOX_STEPS]
    top = max(rows, key=lambda r: (r["recall_40"], r["ap_40"]))
    spec = {"format": VERIFIED_FORMAT, "detector": detector.name, "verifier": verifier_path.name,
            "proposal_threshold": PROPOSAL_SCORE, "max_proposals": MAX_PROPOSALS,
            "alpha": top["alpha"], "box_step": top["box_step"],
            "nms_iou": 0.45, "score_threshold": top["threshold"],
            "val": {"rule": "alpha, box step and threshold: most recall of faces >= 40 px at val "
                    "precision >= 0.90 (int8), then AP", "chosen": top, "candidates": rows,
                    "detector_alone": baseline(va)}}
    spec_path.write_text(json.dumps(spec, indent=1) + "\n")
    read_verified_spec(spec_path)
    log.info("wrote %s: %s", spec_path, json.dumps(top))
    return spec
