"""Train the MobileNetV2 mask classifier on face crops cut the way the device cuts them.

Crops come from the boxes of ``detect/`` (every face, with its class) and from the face photos
of ``classify/`` (two classes), split by ``splits.csv``. Each face is stored once as a wider
*context* crop, so that augmentation can jitter the crop window like detector boxes jitter,
without decoding the photo again.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from convert.augment import photometric  # noqa: E402
from edge.crops import crop, square_crop_box  # noqa: E402
from edge.dataset import find_splits_csv, load_voc_dataset  # noqa: E402
from edge.types import Box  # noqa: E402

log = logging.getLogger("convert.classifier")

LABELS = ("with_mask", "without_mask", "incorrect_mask")
MARGIN = 0.15        # the device crop: square side = max(w, h) * (1 + 2 * MARGIN)
CONTEXT = 1.5        # stored context crop side relative to the device crop side
CONTEXT_PX = 240     # stored context crop size in pixels
MOBILENET_H5 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


@dataclass
class CropSet:
    images: np.ndarray   # (N, CONTEXT_PX, CONTEXT_PX, 3) uint8 BGR context crops
    labels: np.ndarray   # (N,) int index into LABELS
    source: np.ndarray   # (N,) str: 'detect' or 'classify'
    width: np.ndarray    # (N,) face width in original pixels (nan for classify photos)


def _context_box(face: Box) -> Box:
    b = square_crop_box(face, MARGIN)
    return square_crop_box(b, (CONTEXT - 1) / 2)


ANNOTATION = "annotation"   # detect/ crops cut around the annotated boxes


def build_crops(data_dir: Path, split: str, include_classify: bool = True,
                boxes_from: str = ANNOTATION) -> CropSet:
    """The faces of ``split`` as context crops. ``boxes_from``: ANNOTATION, or a detector (a
    path ``edge.detector.load_detector`` takes) whose box, where one overlaps the annotated
    face at IoU >= 0.5 (the best), is cut instead, as the device would cut it; the label is the
    annotation's either way."""
    from edge.detector import load_detector
    from models import detector_path
    detector = None if boxes_from == ANNOTATION else load_detector(
        detector_path(boxes_from), threads=os.cpu_count() or 1)
    imgs, labels, source, width = [], [], [], []
    moved = 0
    for s in load_voc_dataset(data_dir / "detect", split):
        image = cv2.imread(str(s.image))
        if image is None:
            log.warning("skipping unreadable %s", s.image)
            continue
        found = [f.box for f in detector.detect(image)] if detector is not None else []
        for o in s.objects:
            if o.box.width < 4 or o.box.height < 4:
                continue
            box = max(found, key=o.box.iou, default=None)
            if box is not None and o.box.iou(box) >= 0.5:
                moved += 1
            else:
                box = o.box
            imgs.append(crop(image, _context_box(box), CONTEXT_PX))
            labels.append(LABELS.index(o.label))
            source.append("detect")
            width.append(o.box.width)
    if include_classify:
        csv_path = find_splits_csv(data_dir.resolve())
        with csv_path.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh)
                    if r["image"].startswith("classify/") and r["split"] == split]
        for r in rows:
            image = cv2.imread(str(csv_path.parent / r["image"]))
            if image is None:
                log.warning("skipping unreadable %s", r["image"])
                continue
            h, w = image.shape[:2]
            # a face photo is the device crop already: treat the whole photo as the crop window
            face = Box(0, 0, w, h)
            side = max(w, h) / (1 + 2 * MARGIN)
            cx, cy = w / 2, h / 2
            face = Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            imgs.append(crop(image, _context_box(face), CONTEXT_PX))
            labels.append(LABELS.index(Path(r["image"]).parent.name))
            source.append("classify")
            width.append(np.nan)
    if detector is not None:
        log.info("%s: %d of %d detect/ crops cut around %s's boxes", split, moved,
                 int(np.sum(np.array(source) == "detect")), boxes_from)
    return CropSet(np.stack(imgs), np.array(labels), np.array(source), np.array(width, float))


def device_view(context: np.ndarray, size: int) -> np.ndarray:
    """The crop the device would cut, from a stored context crop."""
    side = CONTEXT_PX / CONTEXT
    off = (CONTEXT_PX - side) / 2
    return crop(context, Box(off, off, off + side, off + side), size)


# How far the training crops' window strays from the annotated box, as if a detector had drawn
# it. "uniform": side x U(0.85, 1.15), centre +-8 % of the side (the shipped 96 and 160 px
# models). "detector": Gaussian, clipped at 2.5 sd, with the sds measured between the shipped
# `verified` detector's boxes and the annotation on the train faces >= 40 px (3247 faces at
# IoU >= 0.5): log side ratio 0.141, centre 0.045 (x) and 0.063 (y) of the side.
JITTERS = ("uniform", "detector")
DETECTOR_JITTER_SD = (0.141, 0.045, 0.063)


def jitter_window(rng, jitter: str = "uniform") -> tuple[float, float, float]:
    """How one training crop strays from the annotated box: (side factor, centre x offset,
    centre y offset), the offsets as fractions of the side."""
    if jitter == "detector":
        g = np.clip(rng.normal(size=3), -2.5, 2.5) * DETECTOR_JITTER_SD
        return float(np.exp(g[0])), float(g[1]), float(g[2])
    return rng.uniform(0.85, 1.15), rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)


def jittered_view(rng, context: np.ndarray, size: int, jitter: str = "uniform") -> np.ndarray:
    """A device crop as if the detector's box were a little off in position and size."""
    factor, dx, dy = jitter_window(rng, jitter)
    side = CONTEXT_PX / CONTEXT * factor
    cx, cy = CONTEXT_PX / 2 + dx * side, CONTEXT_PX / 2 + dy * side
    return crop(context, Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), size)


class ShuffledBatches(keras.utils.PyDataset):
    """Batches of ``count`` samples, reshuffled every epoch when training; subclasses build
    batch ``i`` from :meth:`indices`."""

    def __init__(self, count: int, batch_size: int, seed: int, train: bool):
        super().__init__()
        self.batch_size, self.train = batch_size, train
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(count)
        self.on_epoch_end()

    def __len__(self):
        return int(np.ceil(len(self.order) / self.batch_size))

    def on_epoch_end(self):
        if self.train:
            self.rng.shuffle(self.order)

    def indices(self, i: int) -> np.ndarray:
        return self.order[i * self.batch_size:(i + 1) * self.batch_size]


class CropBatches(ShuffledBatches):
    def __init__(self, crops: CropSet, size: int, batch_size: int, seed: int, train: bool,
                 jitter: str = "uniform"):
        self.crops, self.size, self.jitter = crops, size, jitter
        super().__init__(len(crops.labels), batch_size, seed, train)

    def __getitem__(self, i):
        idx = self.indices(i)
        xs = []
        for j in idx:
            ctx = self.crops.images[j]
            if self.train:
                x = jittered_view(self.rng, ctx, self.size, self.jitter)
                if self.rng.random() < 0.5:
                    x = x[:, ::-1]
                x = photometric(self.rng, np.ascontiguousarray(x))
            else:
                x = device_view(ctx, self.size)
            xs.append(x)
        y = keras.utils.to_categorical(self.crops.labels[idx], len(LABELS))
        return np.stack(xs).astype(np.float32), y


def mobilenet_features(size: int, weights: Path | str | None):
    """MobileNetV2 (alpha 1.0, ImageNet) taking BGR pixels 0..255: (input, pooled features).

    Keras's backbone expects RGB in [-1, 1]: the scaling is a layer, and the RGB->BGR swap is
    folded into the first convolution's kernel, so it costs nothing on the device. BatchNorm
    stays frozen.
    """
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=1.0,
                                          include_top=False, weights=str(weights) if weights else None)
    conv1 = base.get_layer("Conv1")
    kernel = conv1.get_weights()
    kernel[0] = kernel[0][:, :, ::-1, :].copy()
    conv1.set_weights(kernel)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    inp = keras.Input((size, size, 3), name="face_bgr")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit")(inp)
    x = base(x)
    return inp, keras.layers.GlobalAveragePooling2D()(x)


def build_model(size: int, weights: Path | str | None) -> keras.Model:
    """The mask classifier: :func:`mobilenet_features`, then softmax over LABELS."""
    inp, x = mobilenet_features(size, weights)
    x = keras.layers.Dropout(0.2)(x)
    out = keras.layers.Dense(len(LABELS), activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name=f"mask_mobilenetv2_{size}")


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean([np.mean(y_pred[y_true == k] == k) for k in np.unique(y_true)]))


def binary_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mask worn properly against not (without_mask or incorrect_mask)."""
    return float(np.mean((y_true == 0) == (y_pred == 0)))


def predict(model, crops: CropSet, size: int) -> np.ndarray:
    return model.predict(CropBatches(crops, size, 64, 0, train=False), verbose=0)


def class_weights(labels: np.ndarray) -> dict[int, float]:
    counts = np.bincount(labels, minlength=len(LABELS)).astype(float)
    w = (counts.sum() / (len(LABELS) * np.maximum(counts, 1))) ** 0.5
    return {k: float(v) for k, v in enumerate(w)}


def train(data_dir: Path, weights_dir: Path, out_dir: Path, size: int = 128, epochs: int = 8,
          batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
          cache: Path | None = None, init: Path | None = None, jitter: str = "uniform",
          boxes_from: str = ANNOTATION) -> dict:
    """Train one classifier at ``size``; the epoch with the best val balanced accuracy +
    mask-vs-not accuracy is kept. ``init``: weights to start from (a run's best.weights.h5 of
    the same size) instead of the ImageNet backbone alone; ``jitter``: one of JITTERS;
    ``boxes_from``: where the train crops' boxes come from (``build_crops``)."""
    if jitter not in JITTERS:
        raise ValueError(f"jitter {jitter!r}: use one of {', '.join(JITTERS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    tr, va = load_crop_cache(data_dir, cache, boxes_from)
    model = build_model(size, weights_dir / MOBILENET_H5)
    if init is not None:
        model.load_weights(init)
    cw = class_weights(tr.labels)
    log.info("size %d: train %d crops %s, val %d, class weights %s", size, len(tr.labels),
             np.bincount(tr.labels).tolist(), len(va.labels), cw)
    gen = CropBatches(tr, size, batch_size, seed, True, jitter)
    steps = len(gen) * epochs
    sched = keras.optimizers.schedules.CosineDecay(lr * 0.1, steps, warmup_target=lr,
                                                   warmup_steps=steps // 10, alpha=0.01)
    model.compile(keras.optimizers.Adam(sched),
                  keras.losses.CategoricalCrossentropy(label_smoothing=0.05), metrics=["accuracy"])
    best, history, t0 = -1.0, [], time.time()
    for epoch in range(1, epochs + 1):
        h = model.fit(gen, epochs=1, class_weight=cw, verbose=0)
        pred = predict(model, va, size).argmax(1)
        entry = {"epoch": epoch, "loss": round(h.history["loss"][-1], 4),
                 "val_accuracy": round(float(np.mean(pred == va.labels)), 4),
                 "val_balanced_accuracy": round(balanced_accuracy(va.labels, pred), 4),
                 "val_mask_vs_not": round(binary_accuracy(va.labels, pred), 4),
                 "seconds": round(time.time() - t0)}
        history.append(entry)
        log.info("size %d val: %s", size, json.dumps(entry))
        score = entry["val_balanced_accuracy"] + entry["val_mask_vs_not"]
        if score > best:
            best = score
            model.save_weights(out_dir / "best.weights.h5")
            (out_dir / "best.json").write_text(json.dumps({**entry, "size": size, "jitter": jitter,
                                                           "boxes_from": str(boxes_from)},
                                                          indent=1))
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    return json.loads((out_dir / "best.json").read_text())


def load_crop_cache(data_dir: Path, cache: Path | None, boxes_from: str | None = None):
    """Train and val crops, built once and kept in ``cache`` (an .npz) when given. The train
    crops' detect/ faces are cut around ``boxes_from``'s boxes (see ``build_crops``; val always
    around the annotation); None takes a cache as it is, or builds with the annotation."""
    if cache is not None and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        stored = str(z["train_boxes_from"]) if "train_boxes_from" in z else ANNOTATION
        if boxes_from is not None and stored != str(boxes_from):
            raise ValueError(f"{cache}: its train crops were cut around {stored}'s boxes, not "
                             f"{boxes_from}'s; delete it or train into another --out")
        return tuple(CropSet(z[f"{p}_images"], z[f"{p}_labels"], z[f"{p}_source"], z[f"{p}_width"])
                     for p in ("train", "val"))
    boxes_from = str(boxes_from or ANNOTATION)
    tr = build_crops(data_dir, "train", boxes_from=boxes_from)
    va = build_crops(data_dir, "val")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, train_boxes_from=boxes_from,
                 **{f"{p}_{k}": getattr(c, k) for p, c in (("train", tr), ("val", va))
                    for k in ("images", "labels", "source", "width")})
    return tr, va


def export(run_dir: Path, weights_dir: Path, data_dir: Path, out_path: Path,
           calibration: int = 400, cache: Path | None = None) -> dict:
    """Quantise a run's selected classifier to int8, check it agrees with float on val crops
    through the device's loader, and write ``out_path`` plus its JSON sidecar."""
    from convert.quantize import to_int8_tflite

    best = json.loads((run_dir / "best.json").read_text())
    size = int(best["size"])
    cache = cache or run_dir.parent / "crops.npz"
    tr, va = load_crop_cache(data_dir, cache)
    model = build_model(size, None)
    model.load_weights(run_dir / "best.weights.h5")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(tr.labels), size=min(calibration, len(tr.labels)), replace=False)
    calib = [device_view(tr.images[i], size) for i in pick]
    to_int8_tflite(model, lambda: iter(calib), out_path)
    float_pred = predict(model, va, size)
    int8_pred = int8_probabilities(out_path, va)
    agree = float(np.mean(int8_pred.argmax(1) == float_pred.argmax(1)))
    meta = {
        "format": "maskdoor-classifier/1",
        "architecture": f"MobileNetV2 alpha 1.0, {size}x{size}, ImageNet backbone, fine-tuned",
        "labels": list(LABELS),
        "input": {"color": "bgr", "range": "0-255"},
        "crop": {"shape": "square", "margin": MARGIN,
                 "rule": "side = max(w, h) * (1 + 2 * margin), centred on the face box"},
        "training": {"data": "shared/data detect/ boxes + classify/ photos, train split",
                     "crop_jitter": best.get("jitter", "uniform"),
                     "train_boxes_from": best.get("boxes_from", ANNOTATION),
                     "selected_on": "val split", "epoch": best["epoch"],
                     "val_float": {k: v for k, v in best.items() if k.startswith("val_")},
                     "val_int8_accuracy": round(float(np.mean(int8_pred.argmax(1) == va.labels)), 4),
                     "val_int8_float_agreement": round(agree, 4),
                     "calibration_crops": len(calib)},
    }
    meta["flag_threshold"], meta["training"]["val_flag_threshold_choice"] = \
        choose_flag_threshold(va, int8_pred)
    out_path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    log.info("exported %s (%.1f MB): int8/float agreement on %d val crops %.4f; flag threshold "
             "%.2f (%s)", out_path, out_path.stat().st_size / 1e6, len(va.labels), agree,
             meta["flag_threshold"], meta["training"]["val_flag_threshold_choice"])
    return meta


def choose_flag_threshold(va: CropSet, probs: np.ndarray) -> tuple[float, dict]:
    """The flag threshold on p(not properly masked), chosen on the val crops of detect/ faces
    >= 40 px: the most unmasked recall with masked false alarm <= 2%; and what it gives."""
    big = (va.source == "detect") & (va.width >= 40)
    pu = probs[big][:, 1:].sum(1)
    unmasked = va.labels[big] != 0
    best_t, best = 0.5, None
    for t in np.round(np.arange(0.30, 0.951, 0.01), 2):
        fa, rec = float(np.mean(pu[~unmasked] >= t)), float(np.mean(pu[unmasked] >= t))
        key = (fa <= 0.02, rec if fa <= 0.02 else -fa)
        if best is None or key > best:
            best_t, best = float(t), key
    flagged = pu >= best_t
    return best_t, {
        "crops": int(big.sum()), "masked_false_alarm": round(float(np.mean(flagged[~unmasked])), 4),
        "unmasked_recall": round(float(np.mean(flagged[unmasked])), 4),
        "rule": "most unmasked recall with masked false alarm <= 0.02 on val detect/ crops "
                ">= 40 px (int8)"}


def int8_probabilities(model_path: Path, crops: CropSet) -> np.ndarray:
    """Class probabilities of an exported classifier on context crops, cut at its input size."""
    from edge.tflite import Model
    q = Model(model_path, threads=os.cpu_count() or 1)
    size = q.input_hw[0]
    p = np.stack([q(device_view(c, size))[0][0] for c in crops.images]).astype(np.float64)
    return p / p.sum(1, keepdims=True)


def crop_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """The selection metrics of ``train`` (argmax verdicts) for probabilities on crops."""
    pred = probs.argmax(1)
    return {"val_accuracy": round(float(np.mean(pred == labels)), 4),
            "val_balanced_accuracy": round(balanced_accuracy(labels, pred), 4),
            "val_mask_vs_not": round(binary_accuracy(labels, pred), 4)}


def write_ensemble(out_path: Path, models: list[Path], data_dir: Path,
                   cache: Path | None = None, boxes_from: str = ANNOTATION) -> dict:
    """An ensemble spec for exported classifiers (their probabilities averaged), its flag
    threshold chosen on val crops like a single model's, with each member's val figures.
    ``boxes_from``: cut the val crops around this detector's boxes (``build_crops``), as the
    members' train crops were cut."""
    from convert import check_members
    from edge.classifier import ENSEMBLE_FORMAT, read_ensemble_spec
    out_path = Path(out_path)
    check_members(out_path, models, "ensemble members", "the labels and crop margin")
    if boxes_from == ANNOTATION and cache is not None and cache.is_file():
        va = load_crop_cache(data_dir, cache)[1]
    else:
        va = build_crops(data_dir, "val", boxes_from=boxes_from)
    probs = [int8_probabilities(m, va) for m in models]
    mean = np.mean(probs, axis=0)
    spec = {"format": ENSEMBLE_FORMAT, "models": [m.name for m in models],
            "combine": "mean of the members' probabilities"}
    spec["flag_threshold"], choice = choose_flag_threshold(va, mean)
    spec["val"] = {"crops": len(va.labels), "crops_cut_around": str(boxes_from),
                   "ensemble": crop_metrics(va.labels, mean),
                   "members": {m.name: crop_metrics(va.labels, p) for m, p in zip(models, probs)},
                   "flag_threshold_choice": choice}
    out_path.write_text(json.dumps(spec, indent=1) + "\n")
    read_ensemble_spec(out_path)
    log.info("wrote %s: %s", out_path, json.dumps(spec["val"]))
    return spec
