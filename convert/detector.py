"""Train a face detector for masked faces, select on val, and export int8 TFLite.

Two architectures (:data:`ARCHS`): OpenCV's res10 SSD, fine-tuned, which keeps res10's layers and
head shapes but uses priors designed for faces (slightly taller than wide, 8-400 px at
320x320), so small and masked faces get matched; and SSDLite on the ImageNet MobileNetV2
(:mod:`convert.ssdlite`), trained with the same kind of priors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from convert import ssdlite  # noqa: E402
from convert.augment import augment  # noqa: E402
from convert.res10 import build_res10  # noqa: E402
from convert.training import RunRecord, warmup_cosine  # noqa: E402
from edge.inference import ssd  # noqa: E402
from convert.measure.dataset import load_voc_dataset  # noqa: E402
from edge.inference.detectors.tflite_ssd import SSDDecoder, softmax_face  # noqa: E402
from convert.measure.evaluate import DetectionRecords  # noqa: E402
from edge.inference.tflite import load_sidecar, sidecar_path  # noqa: E402

log = logging.getLogger("convert.detector")

# Face widths (px at the model input) of the priors at each res10 head; height = 1.2 x width.
FACE_PRIOR_WIDTHS = (
    (8, 11, 15, 20),                   # conv4_3, stride 8
    (26, 32, 38, 45, 53, 62),          # fc7, stride 16
    (72, 84, 98, 114, 132, 152),       # conv6_2, stride 32
    (172, 196, 222, 250, 280, 312),    # conv7_2, stride 64
    (120, 145, 175, 210),              # conv8_2
    (240, 290, 340, 400),              # conv9_2
)
FACE_ASPECT = 1.2
POS_IOU, NEG_IOU, IGNORE_IOU = 0.35, 0.35, 0.2
MIN_BOX_PX = 4  # boxes smaller than this at the model input become ignore regions


def face_anchor_spec(caffe_spec: ssd.AnchorSpec) -> ssd.AnchorSpec:
    h, w = caffe_spec.input_size
    fms = []
    for fm, widths in zip(caffe_spec.feature_maps, FACE_PRIOR_WIDTHS):
        if len(widths) != len(fm.boxes):
            raise ValueError("FACE_PRIOR_WIDTHS must keep res10's priors per location")
        fms.append(ssd.FeatureMapSpec(size=fm.size, step=(h / fm.size[0], w / fm.size[1]),
                                      boxes=tuple((float(b), float(b * FACE_ASPECT)) for b in widths)))
    return ssd.AnchorSpec(input_size=caffe_spec.input_size, feature_maps=tuple(fms),
                          variances=caffe_spec.variances)


class Arch(NamedTuple):
    """What training and export need to know of one detector architecture."""
    description: str                 # the sidecar's "architecture"
    prior_widths: tuple              # face widths of the priors per head (recorded per run)
    stem: tuple[str, ...]            # name prefixes of the layers frozen unless --train-stem


ARCHS = {"res10": Arch("res10 SSD (OpenCV), fine-tuned with face priors", FACE_PRIOR_WIDTHS,
                       ("conv1", "layer_64")),
         "mnv2": Arch("SSDLite on MobileNetV2 (ImageNet backbone), trained with face priors",
                      ssdlite.PRIOR_WIDTHS, ssdlite.STEM)}
# the faces whose val figures pick a training epoch or an exported model's threshold
TUNE_RANGES = {">=40": "faces >= 40 px wide", "door": "faces >= 10% of the image width"}


def build(weights_dir: Path, input_hw=(320, 320), arch: str = "res10"):
    """(Keras model, anchor spec at ``input_hw``) of the detector ``arch`` (see :data:`ARCHS`)."""
    if arch == "mnv2":
        return ssdlite.build_ssdlite(weights_dir / ssdlite.BACKBONE_FILE, input_hw)
    if arch != "res10":
        raise ValueError(f"arch={arch!r}: expected one of {', '.join(ARCHS)}")
    model, caffe_spec, _ = build_res10(weights_dir / "deploy.prototxt",
                                       weights_dir / "res10_300x300_ssd_iter_140000.caffemodel",
                                       input_hw)
    return model, (face_anchor_spec(caffe_spec) if caffe_spec is not None else None)


def match_targets(prior_cs: np.ndarray, prior_corner: np.ndarray, boxes: np.ndarray, hw, variances,
                  ignore: np.ndarray | None = None):
    """Per-prior labels (1 face, 0 background, -1 ignore) and loc targets for one image.

    ``ignore`` marks boxes that are ignore regions, not faces to learn (e.g. likely faces the
    annotators missed): like faces too small to learn, the priors on them are neither faces
    nor background."""
    h, w = hw
    n = len(prior_cs)
    labels = np.zeros(n, np.int32)
    loc = np.zeros((n, 4), np.float32)
    if not len(boxes):
        return labels, loc
    norm = boxes / np.array([w, h, w, h], np.float32)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    valid = (bw >= MIN_BOX_PX) & (bh >= MIN_BOX_PX)
    if ignore is not None:
        valid &= ~np.asarray(ignore, bool)
    ious = ssd.iou_matrix(prior_corner, norm)  # (N, M)
    if (~valid).any():
        labels[(ious[:, ~valid] >= IGNORE_IOU).any(1)] = -1
    if not valid.any():
        return labels, loc
    vi = ious[:, valid]
    vboxes = norm[valid]
    best_gt = vi.argmax(1)
    best_iou = vi.max(1)
    forced = vi.argmax(0)  # each face's best prior is positive whatever its IoU
    best_gt[forced] = np.arange(len(forced))
    best_iou[forced] = 1.0
    pos = best_iou >= POS_IOU
    labels[pos] = 1
    labels[(best_iou >= IGNORE_IOU) & (best_iou < NEG_IOU) & (labels == 0)] = -1
    loc[pos] = ssd.encode(vboxes[best_gt[pos]], prior_cs[pos], variances)
    return labels, loc


def ssd_loss(labels, loc_t, loc_p, conf_p, neg_ratio=3.0, min_neg=16):
    pos = labels > 0
    cand = tf.equal(labels, 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0), logits=conf_p)
    npos = tf.reduce_sum(tf.cast(pos, tf.float32), 1)
    ncand = tf.reduce_sum(tf.cast(cand, tf.float32), 1)
    nneg = tf.minimum(tf.maximum(neg_ratio * npos, min_neg), ncand)
    neg_ce = tf.where(cand, ce, -1.0)
    rank = tf.argsort(tf.argsort(neg_ce, axis=1, direction="DESCENDING"), axis=1)
    hard = cand & (tf.cast(rank, tf.float32) < nneg[:, None])
    denom = tf.maximum(tf.reduce_sum(npos), 1.0)
    conf_loss = tf.reduce_sum(tf.where(pos | hard, ce, 0.0)) / denom
    diff = tf.abs(loc_t - loc_p)
    huber = tf.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5)
    loc_loss = tf.reduce_sum(tf.where(pos[..., None], huber, 0.0)) / denom
    return conf_loss, loc_loss


def load_images(samples, max_side: int, ignore: dict | None = None):
    """Decode once, shrink to ``max_side``; returns [(image, boxes in its pixels, which of the
    boxes are ignore regions)]: the annotated faces, then ``ignore[image name]`` (see
    :func:`read_ignore`)."""
    ignore = ignore or {}
    out = []
    for s in samples:
        img = cv2.imread(str(s.image))
        if img is None:
            log.warning("skipping unreadable %s", s.image)
            continue
        h, w = img.shape[:2]
        f = min(1.0, max_side / max(h, w))
        if f < 1.0:
            img = cv2.resize(img, (int(w * f), int(h * f)), interpolation=cv2.INTER_AREA)
        sx, sy = img.shape[1] / w, img.shape[0] / h
        extra = ignore.get(image_key(s.image), [])
        boxes = np.array([[o.box.x1, o.box.y1, o.box.x2, o.box.y2] for o in s.objects] + extra,
                         np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], np.float32)
        flags = np.arange(len(boxes)) >= len(s.objects)
        out.append((img, boxes, flags))
    return out


def image_key(path) -> str:
    """An image's name in an ignore file: its source folder and file name."""
    path = Path(path)
    return f"{path.parent.parent.name}/{path.name}"


IGNORE_FORMAT = "maskdoor-ignore/1"


def read_ignore(path: Path) -> dict[str, list]:
    """An ignore file (written by :func:`pseudo_ignore`): image key -> boxes in image pixels."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the ignore file ({e}); write it with "
                         "`python -m convert detector-pseudo-ignore`") from e
    if not isinstance(spec, dict) or spec.get("format") != IGNORE_FORMAT or not isinstance(
            spec.get("images"), dict):
        raise ValueError(f"{path}: not a {IGNORE_FORMAT} file with an 'images' object; write it "
                         "with `python -m convert detector-pseudo-ignore`")
    return spec["images"]


def pseudo_ignore(model_path: Path, data_dir: Path, out: Path, min_score: float = 0.6,
                  match_iou: float = 0.3) -> dict:
    """Likely faces the annotators missed, to be ignored (not learned as background) in training.

    The detector ``model_path`` runs on each train image and on its mirror; a detection scoring
    at least ``min_score`` that overlaps no annotated face at IoU >= ``match_iou`` becomes an
    ignore box (boxes of the two views are merged by NMS). Training otherwise teaches the
    detector that unannotated faces are background, which costs recall on real faces."""
    from edge.inference.detectors.tflite_ssd import FaceDetector
    from edge.inference.detectors.multipass import detect_mirrored
    from edge.types import face_arrays
    from edge.images import read_image

    det = FaceDetector(model_path)
    images, total = {}, 0
    for s in load_voc_dataset(data_dir, "train"):
        img = read_image(s.image)
        b1, s1 = face_arrays(det.detect(img, threshold=min_score))
        b2, s2 = detect_mirrored(det, np.ascontiguousarray(img[:, ::-1]), min_score)
        boxes, scores = np.concatenate([b1, b2]), np.concatenate([s1, s2])
        boxes = boxes[ssd.nms(boxes, scores, 0.45)] if len(boxes) else boxes
        gt = np.asarray(s.boxes, np.float32).reshape(-1, 4)
        if len(boxes) and len(gt):
            boxes = boxes[ssd.iou_matrix(boxes, gt).max(1) < match_iou]
        if len(boxes):
            images[image_key(s.image)] = np.round(boxes, 1).tolist()
            total += len(boxes)
    spec = {"format": IGNORE_FORMAT, "model": str(model_path), "min_score": min_score,
            "match_iou": match_iou, "boxes": total, "images": images}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(spec, indent=0))
    log.info("%s: %d ignore boxes in %d train images", out, total, len(images))
    return spec


def batches(data, specs: dict[int, ssd.AnchorSpec], batch_size: int, seed: int,
            stop: threading.Event):
    """Augmented batches; each batch at one input size drawn from ``specs`` (multi-scale)."""
    rng = np.random.default_rng(seed)
    prepared = {}
    for size, spec in specs.items():
        cs = ssd.priors(spec)
        prepared[size] = (spec, cs, np.concatenate([cs[:, :2] - cs[:, 2:] / 2,
                                                   cs[:, :2] + cs[:, 2:] / 2], 1))
    sizes = sorted(prepared)
    while not stop.is_set():
        order = rng.permutation(len(data))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            spec, prior_cs, prior_corner = prepared[sizes[rng.integers(len(sizes))]]
            hw = spec.input_size
            xs, ls, locs = [], [], []
            for j in order[i:i + batch_size]:
                img, boxes, flags = data[j]
                img, boxes, kept = augment(rng, img, boxes, hw)
                lab, loc = match_targets(prior_cs, prior_corner, boxes, hw, spec.variances,
                                         ignore=flags[kept])
                xs.append(img)
                ls.append(lab)
                locs.append(loc)
            yield np.stack(xs).astype(np.float32), np.stack(ls), np.stack(locs)
        yield None  # end of epoch


def evaluate_keras(model, spec, samples, images, threshold=0.05) -> DetectionRecords:
    """Float evaluation of a Keras SSD on full images (squashed to the input size)."""
    dec = SSDDecoder(spec, score_threshold=threshold)
    rec = DetectionRecords()
    h, w = spec.input_size
    batch = []

    def flush():
        x = np.stack([cv2.resize(im, (w, h)) for im, _ in batch]).astype(np.float32)
        out = model(x, training=False)
        loc, conf = out["loc"].numpy(), out["conf"].numpy()
        for k, (im, sample) in enumerate(batch):
            rec.add_faces(sample, dec(loc[k], softmax_face(conf[k]), im.shape[1], im.shape[0]))
        batch.clear()

    for s, im in zip(samples, images):
        batch.append((im, s))
        if len(batch) == 8:
            flush()
    if batch:
        flush()
    return rec


def selection_score(rec: DetectionRecords, rng: str = ">=40") -> tuple[float, float, dict]:
    """Recall on the faces of ``rng`` (">=40" or "door") at the threshold where their precision
    reaches 0.90."""
    thr = rec.threshold_for_precision(0.90, rng)
    return rec.recall(thr, rng), thr, rec.summary(thr)


TRAIN_SIZES = (256, 320, 384, 448, 512)
EVAL_SIZE = 448


def specs_for(weights_dir: Path, sizes, arch: str = "res10") -> dict[int, ssd.AnchorSpec]:
    if arch == "mnv2":
        return {s: ssdlite.anchor_spec((s, s)) for s in sizes}
    return {s: build(weights_dir, (s, s))[1] for s in sizes}


def run_arch(run_dir: Path) -> str:
    """The architecture a training run used (runs before the choice existed are res10)."""
    config = run_dir / "config.json"
    return json.loads(config.read_text()).get("arch", "res10") if config.exists() else "res10"


@dataclass(frozen=True)
class TrainOptions:
    """How :func:`train` trains: the options of ``detector-train``."""
    epochs: int = 12
    batch_size: int = 16
    lr: float = 5e-4
    sizes: tuple[int, ...] = TRAIN_SIZES  # square input sizes drawn per batch (multi-scale)
    eval_size: int = EVAL_SIZE            # input size of the val selection
    select_on: str = ">=40"               # faces whose val recall picks the epoch (TUNE_RANGES)
    init: Path | None = None              # weights to start from (a run's best.weights.h5)
    train_stem: bool = False              # train the stem too (ARCHS[arch].stem, frozen by default)
    ignore: Path | None = None            # ignore file of train-image regions (pseudo_ignore)
    arch: str = "res10"                   # a key of ARCHS
    seed: int = 0
    max_steps: int | None = None          # stop after this many steps (tests)
    limit: int | None = None              # use the first N train images only (tests)

    def __post_init__(self):
        if any(s % 64 for s in self.sizes):
            raise ValueError(f"--sizes {' '.join(map(str, self.sizes))}: training sizes must be "
                             "multiples of 64 (e.g. 256 320 448) so every stride divides them")
        if self.arch not in ARCHS:
            raise ValueError(f"arch={self.arch!r}: expected one of {', '.join(ARCHS)}")
        if self.select_on not in TUNE_RANGES:
            raise ValueError(f"select_on={self.select_on!r}: expected one of "
                             f"{', '.join(TUNE_RANGES)}")
        if self.init is not None:
            if not Path(self.init).is_file():
                raise FileNotFoundError(f"--init {self.init}: no such weights file (a run's "
                                        "best.weights.h5)")
            source = run_arch(Path(self.init).parent)
            if source != self.arch:
                raise ValueError(f"--init {self.init}: weights of a {source} run; train it with "
                                 f"--arch {source}")

    def config(self) -> dict:
        """The run's ``config.json``: these options and the priors they train."""
        return {"sizes": list(self.sizes), "eval_size": self.eval_size, "epochs": self.epochs,
                "lr": self.lr, "batch_size": self.batch_size,
                "init": str(self.init) if self.init else None, "select_on": self.select_on,
                "train_stem": self.train_stem,
                "ignore": str(self.ignore) if self.ignore else None, "arch": self.arch,
                "prior_widths": ARCHS[self.arch].prior_widths, "prior_aspect": FACE_ASPECT}


def trainable_model(weights_dir: Path, options: TrainOptions):
    """The detector to train, at any input size: ``options.init``'s weights if given; the
    BatchNormalization statistics and, unless ``train_stem``, the stem frozen."""
    model, _ = build(weights_dir, (None, None), options.arch)
    if options.init is not None:
        model.load_weights(options.init)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # batches are small; keep the pretrained statistics
        if not options.train_stem and layer.name.startswith(ARCHS[options.arch].stem):
            layer.trainable = False  # low-level filters transfer; saves the costliest backprop
    return model


def training_step(model, optimizer):
    """One optimiser step on a batch: (images, prior labels, loc targets) -> (conf, loc) loss."""
    @tf.function(reduce_retracing=True)
    def step(x, labels, loc_t):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            cl, ll = ssd_loss(labels, loc_t, out["loc"], out["conf"])
            loss = cl + ll
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return cl, ll
    return step


@contextlib.contextmanager
def prefetched(produce, depth: int = 6):
    """Run ``produce(stop)`` (a generator that ends when the event ``stop`` is set) on a thread,
    ``depth`` items ahead; yields a function that returns the next item."""
    stop = threading.Event()
    q: queue.Queue = queue.Queue(maxsize=depth)

    def producer():
        for item in produce(stop):
            while not stop.is_set():
                try:
                    q.put(item, timeout=1)
                    break
                except queue.Full:
                    pass

    threading.Thread(target=producer, daemon=True).start()
    try:
        yield q.get
    finally:
        stop.set()


def val_entry(model, spec: ssd.AnchorSpec, val_s, val_images, select_on: str
              ) -> tuple[dict, float]:
    """The val figures of one epoch and its selection score: recall of the ``select_on`` faces
    at precision 0.90, plus 0.1 x their AP."""
    rec = evaluate_keras(model, spec, val_s, val_images)
    recall, thr, summary = selection_score(rec, select_on)
    ap = rec.average_precision(select_on)
    return {f"val_recall_{select_on}_at_p90": round(recall, 4), "val_threshold": round(thr, 3),
            f"val_ap_{select_on}": round(ap, 4), "val_ap": summary["ap"],
            "val_ap_>=40": summary["ap_>=40"], "val_recall": summary["recall"]}, recall + 0.1 * ap


def train(data_dir: Path, weights_dir: Path, out_dir: Path,
          options: TrainOptions = TrainOptions()) -> Path:
    """Multi-scale fine-tuning: one set of weights that works at every size in
    ``options.sizes``; each epoch is scored on val (:func:`val_entry`) and the best one kept in
    ``out_dir`` (:class:`convert.training.RunRecord`). Returns its weights file."""
    record = RunRecord(out_dir)
    keras.utils.set_random_seed(options.seed)
    specs = specs_for(weights_dir, set(options.sizes) | {options.eval_size}, options.arch)
    model = trainable_model(weights_dir, options)
    (out_dir / "config.json").write_text(json.dumps(options.config(), indent=1))
    train_s = load_voc_dataset(data_dir, "train")
    val_s = load_voc_dataset(data_dir, "val")
    if options.limit:
        train_s, val_s = train_s[:options.limit], val_s[:max(8, options.limit // 4)]
    log.info("train %d images, val %d images, sizes %s", len(train_s), len(val_s), options.sizes)
    train_data = load_images(train_s, 800, read_ignore(options.ignore) if options.ignore else None)
    val_images = [cv2.imread(str(s.image)) for s in val_s]
    total = options.max_steps or len(train_data) // options.batch_size * options.epochs
    optimizer = keras.optimizers.Adam(warmup_cosine(options.lr, total,
                                                    min(300, total // 10), alpha=0.02))
    step = training_step(model, optimizer)
    train_specs = {s: specs[s] for s in options.sizes}
    done, t0 = 0, time.time()
    with prefetched(lambda stop: batches(train_data, train_specs, options.batch_size,
                                         options.seed, stop)) as next_batch:
        for epoch in range(1, options.epochs + 1):
            losses = []
            while done < total and (b := next_batch()) is not None:
                cl, ll = step(tf.constant(b[0]), tf.constant(b[1]), tf.constant(b[2]))
                losses.append((float(cl), float(ll)))
                done += 1
                if done % 20 == 0:
                    m = np.mean(losses[-20:], 0)
                    log.info("epoch %d step %d/%d conf %.3f loc %.3f (%.1f s)", epoch, done,
                             total, m[0], m[1], time.time() - t0)
            figures, score = val_entry(model, specs[options.eval_size], val_s, val_images,
                                       options.select_on)
            entry = {"epoch": epoch, "steps": done, "loss": np.mean(losses, 0).round(4).tolist(),
                     "eval_size": options.eval_size, "select_on": options.select_on, **figures,
                     "seconds": round(time.time() - t0)}
            log.info("val: %s", json.dumps(entry))
            record.add(model, entry, score)
            if done >= total:
                break
    return out_dir / "best.weights.h5"


def calibration_images(data_dir: Path, hw, count: int, seed: int = 0):
    """``count`` train-split images (both sources), resized as the device resizes them."""
    samples = load_voc_dataset(data_dir, "train")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(samples), size=min(count, len(samples)), replace=False)
    h, w = hw
    return [cv2.resize(cv2.imread(str(samples[i].image)), (w, h)) for i in sorted(pick)]


CALIBRATION_IMAGES = 300


def export(run_dir: Path, weights_dir: Path, data_dir: Path, out_path: Path,
           size: int | tuple[int, int], calibration: int = CALIBRATION_IMAGES,
           tune_for: str = ">=40") -> dict:
    """Quantise the run's selected weights to int8 at input ``size`` (N, or (height, width)),
    pick the operating threshold on val with the int8 model itself (:func:`choose_threshold`)
    and write ``out_path`` plus its JSON sidecar. Returns the sidecar."""
    from convert.quantize import to_float_tflite, to_int8_tflite

    hw = (size, size) if isinstance(size, int) else tuple(size)
    arch = run_arch(run_dir)
    model, spec = build(weights_dir, hw, arch)
    model.load_weights(run_dir / "best.weights.h5")
    calib = calibration_images(data_dir, spec.input_size, calibration)
    to_int8_tflite(model, lambda: iter(calib), out_path, batch_of_one=True)
    float_path = run_dir / f"{out_path.stem}_float.tflite"
    to_float_tflite(model, float_path, batch_of_one=True)
    selected = json.loads((run_dir / "best.json").read_text())
    meta = {
        "format": "maskdoor-ssd/1",
        "architecture": ARCHS[arch].description,
        "input": {"color": "bgr", "resize": "stretch", "range": "0-255"},
        "anchors": spec.to_dict(),
        "score_threshold": 0.5,
        "nms_iou": 0.45,
        "training": {"data": "shared/data/detect (andrewmvd + ilc2021), train split",
                     "selected_on": "val split", "epoch": selected["epoch"], "arch": arch,
                     "calibration_images": len(calib)},
    }
    for path in (out_path, float_path):
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    choose_threshold(out_path, data_dir, tune_for, also=(float_path,))
    meta = load_sidecar(out_path)
    log.info("exported %s (%.1f MB), threshold %.4f, val: %s", out_path,
             out_path.stat().st_size / 1e6, meta["score_threshold"], meta["training"]["val_int8"])
    return meta


def write_multipass(out: Path, models: list[Path], flip: bool, data_dir: Path,
                    fusion_iou: float = 0.55, tune_for: str = ">=40",
                    max_face: float | None = None) -> float:
    """Write a multi-pass detector spec (``edge.inference.detectors.multipass.MultiPassDetector``) over exported
    detectors that sit in the spec's folder, and choose its threshold on val. ``max_face``: every
    pass at a larger input than the first reports only faces up to this width at its own input
    (scale-aware: those passes are there for small faces)."""
    from convert import check_members
    from edge.inference.detectors.multipass import MULTIPASS_FORMAT
    out = Path(out)
    metas = check_members(out, models, "pass models", "the anchor spec")
    widths = [meta["anchors"]["input_size"][1] for meta in metas]
    spec = {"format": MULTIPASS_FORMAT,
            "passes": [{"model": Path(m).name, "flip": flip,
                        **({"max_face": max_face} if max_face and w > widths[0] else {})}
                       for m, w in zip(models, widths)],
            "pass_threshold": 0.05, "fusion_iou": fusion_iou, "score_threshold": 0.5}
    out.write_text(json.dumps(spec, indent=1))
    return choose_threshold(out, data_dir, tune_for)


def choose_threshold(model_path: Path, data_dir: Path, tune_for: str = ">=40", also=(),
                     precision: float = 0.90) -> float:
    """Pick the operating threshold of an exported detector on val, through the device's own
    loader: the most recall at ``precision`` on the faces of ``tune_for`` (">=40" or "door").
    Writes it, the rule and the val figures into the sidecar of ``model_path`` (and of the
    models in ``also``)."""
    from edge.inference.detectors import load_detector
    if tune_for not in TUNE_RANGES:
        raise ValueError(f"tune_for={tune_for!r}: expected one of {', '.join(TUNE_RANGES)}")
    val = load_voc_dataset(data_dir, "val")
    det = load_detector(model_path, threads=os.cpu_count() or 1, threshold=0.05)
    rec = DetectionRecords()
    for s in val:
        rec.add_faces(s, det.detect(cv2.imread(str(s.image))))
    # floor, not round: the threshold must keep the whole group of equal scores at the cut
    thr = max(math.floor(rec.threshold_for_precision(precision, tune_for) * 1e6) / 1e6, 0.3)
    for path in (model_path, *also):
        meta = load_sidecar(path)
        meta["score_threshold"] = thr
        meta.setdefault("training", {})["threshold_rule"] = (
            f"most recall at precision >= {precision:.2f} on val {TUNE_RANGES[tune_for]}")
        meta["training"]["val_int8"] = rec.summary(thr)
        sidecar_path(path).write_text(json.dumps(meta, indent=1))
    log.info("%s: threshold %.4f (%s)", model_path, thr, TUNE_RANGES[tune_for])
    return thr
