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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from convert.augment import photometric  # noqa: E402
from convert.training import RunRecord, ShuffledBatches, fit_and_select  # noqa: E402
from edge.inference.crops import crop, square_crop_box  # noqa: E402
from convert.measure.dataset import find_splits_csv, load_voc_dataset  # noqa: E402
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


def build_crops(data_dir: Path, split: str, include_classify: bool = True) -> CropSet:
    """The faces of ``split`` as context crops, cut around their annotated boxes."""
    imgs, labels, source, width = [], [], [], []
    for s in load_voc_dataset(data_dir / "detect", split):
        image = cv2.imread(str(s.image))
        if image is None:
            log.warning("skipping unreadable %s", s.image)
            continue
        for o in s.objects:
            if o.box.width < 4 or o.box.height < 4:
                continue
            imgs.append(crop(image, _context_box(o.box), CONTEXT_PX))
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
            side = max(w, h) / (1 + 2 * MARGIN)
            cx, cy = w / 2, h / 2
            face = Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            imgs.append(crop(image, _context_box(face), CONTEXT_PX))
            labels.append(LABELS.index(Path(r["image"]).parent.name))
            source.append("classify")
            width.append(np.nan)
    return CropSet(np.stack(imgs), np.array(labels), np.array(source), np.array(width, float))


def device_view(context: np.ndarray, size: int) -> np.ndarray:
    """The crop the device would cut, from a stored context crop."""
    side = CONTEXT_PX / CONTEXT
    off = (CONTEXT_PX - side) / 2
    return crop(context, Box(off, off, off + side, off + side), size)


def jitter_window(rng) -> tuple[float, float, float]:
    """How one training crop strays from the annotated box, as if a detector had drawn it:
    (side factor in [0.85, 1.15], centre x offset, centre y offset), the offsets within +-8 %
    of the side."""
    return rng.uniform(0.85, 1.15), rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)


def jittered_view(rng, context: np.ndarray, size: int) -> np.ndarray:
    """A device crop as if the detector's box were a little off in position and size."""
    factor, dx, dy = jitter_window(rng)
    side = CONTEXT_PX / CONTEXT * factor
    cx, cy = CONTEXT_PX / 2 + dx * side, CONTEXT_PX / 2 + dy * side
    return crop(context, Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), size)


class CropBatches(ShuffledBatches):
    def __init__(self, crops: CropSet, size: int, batch_size: int, seed: int, train: bool):
        self.crops, self.size = crops, size
        super().__init__(len(crops.labels), batch_size, seed, train)

    def __getitem__(self, i):
        idx = self.indices(i)
        xs = []
        for j in idx:
            ctx = self.crops.images[j]
            if self.train:
                x = jittered_view(self.rng, ctx, self.size)
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


def val_figures(labels: np.ndarray, pred: np.ndarray) -> dict:
    """The val figures of argmax verdicts ``pred``: accuracy, balanced accuracy, mask-vs-not."""
    return {"val_accuracy": round(float(np.mean(pred == labels)), 4),
            "val_balanced_accuracy": round(balanced_accuracy(labels, pred), 4),
            "val_mask_vs_not": round(binary_accuracy(labels, pred), 4)}


def train(data_dir: Path, weights_dir: Path, out_dir: Path, size: int = 128, epochs: int = 8,
          batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
          cache: Path | None = None, init: Path | None = None) -> dict:
    """Train one classifier at ``size``; the epoch with the best val balanced accuracy +
    mask-vs-not accuracy is kept. ``init``: weights to start from (a run's best.weights.h5 of
    the same size) instead of the ImageNet backbone alone."""
    record = RunRecord(out_dir)
    keras.utils.set_random_seed(seed)
    tr, va = load_crop_cache(data_dir, cache)
    model = build_model(size, weights_dir / MOBILENET_H5)
    if init is not None:
        model.load_weights(init)
    cw = class_weights(tr.labels)
    log.info("size %d: train %d crops %s, val %d, class weights %s", size, len(tr.labels),
             np.bincount(tr.labels).tolist(), len(va.labels), cw)

    def validate(model):
        figures = val_figures(va.labels, predict(model, va, size).argmax(1))
        return figures, figures["val_balanced_accuracy"] + figures["val_mask_vs_not"], \
            {"size": size}

    return fit_and_select(model, CropBatches(tr, size, batch_size, seed, True),
                          keras.losses.CategoricalCrossentropy(label_smoothing=0.05), lr, epochs,
                          record, validate, class_weight=cw, name=f"classifier {size}")


def load_crop_cache(data_dir: Path, cache: Path | None) -> tuple[CropSet, CropSet]:
    """Train and val crops, built once and kept in ``cache`` (an .npz) when given."""
    if cache is not None and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return tuple(CropSet(z[f"{p}_images"], z[f"{p}_labels"], z[f"{p}_source"], z[f"{p}_width"])
                     for p in ("train", "val"))
    tr = build_crops(data_dir, "train")
    va = build_crops(data_dir, "val")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{f"{p}_{k}": getattr(c, k) for p, c in (("train", tr), ("val", va))
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
    from edge.inference.tflite import Model
    q = Model(model_path, threads=os.cpu_count() or 1)
    size = q.input_hw[0]
    p = np.stack([q(device_view(c, size))[0][0] for c in crops.images]).astype(np.float64)
    return p / p.sum(1, keepdims=True)


def write_ensemble(out_path: Path, models: list[Path], data_dir: Path,
                   cache: Path | None = None) -> dict:
    """An ensemble spec for exported classifiers (their probabilities averaged), its flag
    threshold chosen on val crops like a single model's, with each member's val figures. The
    val crops come from ``cache`` (``classifier-train``'s) when it exists."""
    from convert import check_members
    from edge.inference.classifier import ENSEMBLE_FORMAT, read_ensemble_spec
    out_path = Path(out_path)
    check_members(out_path, models, "ensemble members", "the labels and crop margin")
    if cache is not None and cache.is_file():
        va = load_crop_cache(data_dir, cache)[1]
    else:
        va = build_crops(data_dir, "val")
    probs = [int8_probabilities(m, va) for m in models]
    mean = np.mean(probs, axis=0)
    spec = {"format": ENSEMBLE_FORMAT, "models": [m.name for m in models],
            "combine": "mean of the members' probabilities"}
    spec["flag_threshold"], choice = choose_flag_threshold(va, mean)
    spec["val"] = {"crops": len(va.labels),
                   "ensemble": val_figures(va.labels, mean.argmax(1)),
                   "members": {m.name: val_figures(va.labels, p.argmax(1))
                               for m, p in zip(models, probs)},
                   "flag_threshold_choice": choice}
    out_path.write_text(json.dumps(spec, indent=1) + "\n")
    read_ensemble_spec(out_path)
    log.info("wrote %s: %s", out_path, json.dumps(spec["val"]))
    return spec
