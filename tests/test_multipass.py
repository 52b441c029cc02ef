"""The multi-pass detector: fusion of passes, its spec, and the shipped four passes (the
proposals of 'accurate')."""

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import FIXTURES, FIXTURE_IMAGES
from convert.measure.dataset import load_voc_dataset
from edge.inference.detectors.tflite_ssd import FaceDetector
from edge.inference.detectors.multipass import MultiPassDetector
from edge.inference.detectors import load_detector
from edge.errors import ModelError
from edge.inference.ssd import fuse
from models import FACE_DETECTOR, FACE_DETECTOR_4PASS


def test_fuse_averages_boxes_by_score_and_scores_over_all_passes():
    a = (np.array([[10, 10, 50, 50], [200, 200, 240, 240]], np.float32), np.array([0.9, 0.6]))
    b = (np.array([[12, 10, 52, 50]], np.float32), np.array([0.3]))
    boxes, scores = fuse([a, b], iou_threshold=0.55)
    assert len(boxes) == 2
    # the face both passes saw: mean of the two scores; its box leans to the surer pass
    np.testing.assert_allclose(scores, [0.6, 0.3], atol=1e-6)
    np.testing.assert_allclose(boxes[0], [(10 * 0.9 + 12 * 0.3) / 1.2, 10,
                                          (50 * 0.9 + 52 * 0.3) / 1.2, 50], atol=1e-4)
    np.testing.assert_allclose(boxes[1], [200, 200, 240, 240])


def test_fuse_counts_a_pass_once_per_face_and_handles_nothing():
    # two boxes of the same pass on one face: the pass counts with its best score only
    a = (np.array([[0, 0, 40, 40], [1, 0, 41, 40]], np.float32), np.array([0.8, 0.7]))
    b = (np.zeros((0, 4), np.float32), np.zeros(0))
    boxes, scores = fuse([a, b])
    np.testing.assert_allclose(scores, [0.4], atol=1e-6)
    boxes, scores = fuse([b, b])
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_fuse_scale_aware_drops_wide_boxes_of_small_face_passes():
    """Pass b (a larger input, for small faces) may report faces up to 60 px wide here."""
    inf = float("inf")
    a = (np.array([[0, 0, 40, 40], [100, 100, 300, 300]], np.float32), np.array([0.8, 0.9]))
    b = (np.array([[1, 0, 41, 40], [100, 100, 300, 300], [400, 0, 430, 30]], np.float32),
         np.array([0.6, 0.9, 0.5]))
    boxes, scores = fuse([a, b], max_widths=[inf, 60.0])
    np.testing.assert_allclose(boxes[0], [100, 100, 300, 300])
    # the big face: b's box is dropped and b is not counted, so a's score stands
    # the small face both saw: the mean of both; the one only b saw: half its score
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.25], atol=1e-6)
    # without limits every pass counts everywhere: the big face is the mean of both passes
    boxes, scores = fuse([a, b])
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.25], atol=1e-6)
    boxes, scores = fuse([a, (b[0][2:], b[1][2:])])
    np.testing.assert_allclose(scores, [0.45, 0.4, 0.25], atol=1e-6)


def test_multipass_limits_a_pass_to_small_faces_in_image_pixels(tmp_path, monkeypatch):
    """max_face is in pixels at the pass's own input: on a 2x wider image the limit doubles."""
    spec = {"format": "maskdoor-multipass/1", "score_threshold": 0.5,
            "passes": [{"model": FACE_DETECTOR.name, "flip": False},
                       {"model": FACE_DETECTOR.name, "flip": False, "max_face": 50}]}
    for ext in (".tflite", ".json"):
        shutil.copy(FACE_DETECTOR.with_suffix(ext), tmp_path / FACE_DETECTOR.with_suffix(ext).name)
    (tmp_path / "s.json").write_text(json.dumps(spec))
    det = load_detector(tmp_path / "s.json")
    assert "448x448 (faces <= 50 px)" in det.describe()
    seen = []

    def spy(parts, iou, limits):
        seen.append(limits)
        return fuse(parts, iou, limits)
    monkeypatch.setattr("edge.inference.ssd.fuse", spy)
    det.detect(np.zeros((300, 896, 3), np.uint8))
    assert seen == [[float("inf"), 100.0]]


@pytest.fixture(scope="module")
def four_pass():
    return load_detector(FACE_DETECTOR_4PASS)


def test_shipped_four_pass_detector(four_pass):
    assert isinstance(four_pass, MultiPassDetector)
    assert four_pass.pass_count() == 4 and len(four_pass.model_paths()) == 4
    assert [p.name for p in four_pass.model_paths()] == [
        "face_detector.tflite", "face_detector_res10.tflite", "face_detector_544.tflite",
        "face_detector_768.tflite"]
    assert 0.3 < four_pass.score_threshold < 1.0
    assert four_pass.describe().startswith(
        "int8 448x448+448x448+544x544 (faces <= 128 px)+768x768 (faces <= 128 px): 4 passes")
    assert isinstance(load_detector(FACE_DETECTOR), FaceDetector)


@pytest.mark.parametrize("sample", load_voc_dataset(FIXTURES / "andrewmvd"),
                         ids=lambda s: s.image.name)
def test_four_passes_find_every_annotated_face_at_least_40px(four_pass, sample):
    faces = four_pass.detect(cv2.imread(str(sample.image)))
    for obj in sample.objects:
        if obj.box.width >= 40:
            best = max((f.box.iou(obj.box) for f in faces), default=0.0)
            assert best >= 0.5, f"{obj.label} face {obj.box} missed (best IoU {best:.2f})"
    for f in faces:
        assert four_pass.score_threshold <= f.score <= 1.0
        assert 0 <= f.box.x1 < f.box.x2 <= sample.width


def test_mirrored_passes_are_symmetric_and_four_passes_are_quiet_on_empty_scenes(four_pass, tmp_path):
    spec = {"format": "maskdoor-multipass/1", "score_threshold": four_pass.score_threshold,
            "passes": [{"model": "face_detector_res10.tflite", "flip": True},
                       {"model": "face_detector_768.tflite", "flip": True, "max_face": 128}]}
    for p in four_pass.model_paths():  # the shipped files this spec names, with their sidecars
        if p.name in {q["model"] for q in spec["passes"]}:
            for ext in (".tflite", ".json"):
                shutil.copy(p.with_suffix(ext), tmp_path / p.with_suffix(ext).name)
    (tmp_path / "m.json").write_text(json.dumps(spec))
    mirrored = load_detector(tmp_path / "m.json")
    image = cv2.imread(str(FIXTURE_IMAGES[0]))
    w = image.shape[1]
    a = sorted(mirrored.detect(image), key=lambda f: f.box.x1)
    b = sorted(mirrored.detect(np.ascontiguousarray(image[:, ::-1])), key=lambda f: -f.box.x2)
    assert len(a) == len(b) > 0
    for fa, fb in zip(a, b):  # mirrored passes and mirrored image: the same faces, mirrored
        assert abs(fa.box.x1 - (w - fb.box.x2)) < 2 and abs(fa.score - fb.score) < 0.02
    assert four_pass.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    with pytest.raises(ValueError, match="BGR image"):
        four_pass.detect(np.zeros((10, 10), np.uint8))


def _spec(tmp_path, **change):
    spec = json.loads(FACE_DETECTOR_4PASS.read_text())
    spec.update(change)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("change, message", [
    ({"format": "something-else"}, "not a multi-pass detector spec"),
    ({"passes": []}, "'passes' must be a non-empty list"),
    ({"passes": [{"model": "nowhere.tflite"}]}, "pass model nowhere.tflite not found"),
    ({"score_threshold": "high"}, "'score_threshold' missing or not a number"),
    ({"passes": [{"model": "face_detector.tflite", "max_face": 0}]}, "'max_face' must be a positive"),
    ({"passes": [{"model": "face_detector.tflite", "max_face": "big"}]}, "'max_face' must be"),
])
def test_bad_specs_are_clear_errors(tmp_path, change, message):
    with pytest.raises(ModelError, match=message):
        load_detector(_spec(tmp_path, **change))


def test_spec_needs_a_threshold_and_must_exist(tmp_path):
    spec = json.loads(FACE_DETECTOR_4PASS.read_text())
    del spec["score_threshold"]
    for p in spec["passes"]:
        for ext in (".tflite", ".json"):
            src = FACE_DETECTOR_4PASS.parent / p["model"].replace(".tflite", ext)
            shutil.copy(src, tmp_path / src.name)
    (tmp_path / "s.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="'score_threshold' missing or not a number"):
        load_detector(tmp_path / "s.json")
    spec["score_threshold"] = 0.5
    (tmp_path / "s.json").write_text(json.dumps(spec))
    assert load_detector(tmp_path / "s.json", threshold=0.9).score_threshold == 0.9
    with pytest.raises(ModelError, match="detector spec not found"):
        load_detector(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_detector(tmp_path / "broken.json")
