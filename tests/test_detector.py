"""The shipped int8 face detector on golden images with human-annotated boxes."""

import json

import cv2
import numpy as np
import pytest

from conftest import FIXTURES, FIXTURE_IMAGES
from convert.measure.dataset import load_voc_dataset
from edge.inference.detectors.tflite_ssd import FaceDetector
from edge.inference.tflite import load_sidecar
from edge.errors import ModelError
from models import FACE_DETECTOR, FACE_DETECTOR_DOOR, detector_path


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(FACE_DETECTOR, threads=1)


def test_model_describes_itself(detector):
    meta = load_sidecar(FACE_DETECTOR)
    assert detector.input_hw == tuple(meta["anchors"]["input_size"])
    assert 0.0 < detector.decoder.score_threshold < 1.0


@pytest.mark.parametrize("sample", load_voc_dataset(FIXTURES / "andrewmvd"),
                         ids=lambda s: s.image.name)
def test_finds_every_annotated_face_at_least_40px(detector, sample):
    faces = detector.detect(cv2.imread(str(sample.image)))
    for obj in sample.objects:
        if obj.box.width < 40:
            continue
        best = max((f.box.iou(obj.box) for f in faces), default=0.0)
        assert best >= 0.5, f"{obj.label} face {obj.box} missed (best IoU {best:.2f})"
    for f in faces:
        assert 0 <= f.box.x1 < f.box.x2 <= sample.width
        assert 0 <= f.box.y1 < f.box.y2 <= sample.height
        assert detector.decoder.score_threshold <= f.score <= 1.0


def test_any_image_size_and_empty_scene(detector):
    image = cv2.imread(str(FIXTURE_IMAGES[0]))
    big = cv2.resize(image, None, fx=2.5, fy=2.5)
    a = detector.detect(image)
    b = detector.detect(big)
    assert len(a) == len(b)
    for fa, fb in zip(sorted(a, key=lambda f: f.box.x1), sorted(b, key=lambda f: f.box.x1)):
        assert fa.box.scale(2.5, 2.5).iou(fb.box) > 0.8
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []


def test_rejects_non_image_arrays(detector):
    with pytest.raises(ValueError, match="BGR image"):
        detector.detect(np.zeros((10, 10), np.uint8))


def test_missing_sidecar_is_a_clear_error(tmp_path):
    lone = tmp_path / "face_detector.tflite"
    lone.write_bytes(FACE_DETECTOR.read_bytes())
    with pytest.raises(ModelError, match="face_detector.json: missing"):
        FaceDetector(lone)


def test_sidecar_mismatch_is_detected(tmp_path):
    model = tmp_path / "face_detector.tflite"
    model.write_bytes(FACE_DETECTOR.read_bytes())
    meta = load_sidecar(FACE_DETECTOR)
    meta["anchors"]["feature_maps"] = meta["anchors"]["feature_maps"][:-1]
    model.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="output rows but the anchor spec describes"):
        FaceDetector(model)


def test_a_camera_lores_stream_gives_the_same_faces_in_main_pixels(detector):
    image = cv2.imread(str(FIXTURE_IMAGES[1]))
    h, w = detector.input_hw
    lores = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    a = detector.detect(image)
    b = detector.detect(image, lores=lores)
    assert [f.box.as_list() for f in a] == [f.box.as_list() for f in b]


@pytest.fixture(scope="module")
def door_detector():
    return FaceDetector(detector_path("door"), threads=1)


def test_door_detector_is_the_appliance_default_and_tuned_for_close_faces(door_detector):
    from edge import config
    assert detector_path(config.load(None).detector.model) == FACE_DETECTOR_DOOR
    assert detector_path("full") == FACE_DETECTOR
    assert door_detector.input_hw == (256, 256)
    meta = load_sidecar(FACE_DETECTOR_DOOR)
    assert "10% of the image width" in meta["training"]["threshold_rule"]
    assert meta["training"]["val_int8"]["precision_door"] >= 0.90


@pytest.mark.parametrize("sample", load_voc_dataset(FIXTURES / "andrewmvd"),
                         ids=lambda s: s.image.name)
def test_door_detector_finds_every_face_close_to_the_door(door_detector, sample):
    faces = door_detector.detect(cv2.imread(str(sample.image)))
    for obj in sample.objects:
        if obj.box.width < 0.10 * sample.width:
            continue
        best = max((f.box.iou(obj.box) for f in faces), default=0.0)
        assert best >= 0.5, f"{obj.label} face {obj.box} missed (best IoU {best:.2f})"


def test_a_policy_wanting_smaller_faces_than_the_door_detector_sees_is_warned(caplog):
    from edge import config
    from edge.service import build_models
    build_models(config.load(None, {"policy.min_face_width_frac": 0.06}))
    assert "15 px wide" in caplog.text and "detector.model = 'full'" in caplog.text
    caplog.clear()
    build_models(config.load(None, {"policy.min_face_width_frac": 0.06, "detector.model": "full"}))
    assert caplog.text == "", "27 px at 448x448 is enough"
    build_models(config.load(None, {"policy.min_face_width_frac": 0.04, "detector.model": "full"}))
    assert "18 px wide" in caplog.text and "'full'" not in caplog.text
