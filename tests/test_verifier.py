"""edge/inference/verifier.py and the verified detector: proposals looked at again, rescored and reboxed."""

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import FIXTURE_IMAGES, needs_tensorflow
from edge.inference import verifier
from edge.errors import ModelError
from models import FACE_DETECTOR


def test_windows_are_squares_around_the_box_and_window_coordinates_round_trip():
    boxes = np.array([[10, 20, 50, 100], [0, 0, 30, 10]], np.float32)
    win = verifier.windows(boxes, 0.3)
    side = win[:, 2] - win[:, 0]
    assert np.allclose(side, win[:, 3] - win[:, 1])
    assert np.allclose(side, [80 * 1.6, 30 * 1.6])
    assert np.allclose((win[:, :2] + win[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)
    rel = verifier.to_window(boxes, win)
    assert np.all((rel >= 0) & (rel <= 1))
    assert np.allclose(verifier.from_window(rel, win), boxes, atol=1e-4)


def test_rescore_moves_boxes_by_the_deltas_mixes_scores_and_merges_what_now_coincides():
    props = np.array([[100, 100, 140, 150], [104, 96, 144, 146], [300, 40, 330, 80]], np.float32)
    det = np.array([0.3, 0.2, 0.9], np.float32)
    win = verifier.windows(props, 0.3)
    target = np.array([102, 98, 142, 148], np.float32)  # the face both first boxes are near
    deltas = np.zeros((3, 4), np.float32)
    deltas[:2] = verifier.to_window(np.stack([target, target]), win[:2]) \
        - verifier.to_window(props[:2], win[:2])
    logits = np.array([4.0, 3.0, -4.0], np.float32)
    boxes, scores = verifier.rescore(props, det, win, logits, deltas, alpha=0.5, nms_iou=0.45)
    assert len(boxes) == 2, "the two loose boxes on one face became one"
    assert np.allclose(boxes[0], target, atol=1e-3)
    p = 1 / (1 + np.exp(-4.0))
    assert scores[0] == pytest.approx(np.sqrt(0.3 * p), rel=1e-5)
    assert scores[1] == pytest.approx(np.sqrt(0.9 / (1 + np.exp(4.0))), rel=1e-5)
    # alpha 1 is the detector alone, alpha 0 the verifier alone
    assert np.allclose(verifier.combine(det, logits, 1.0), det)
    assert np.allclose(verifier.combine(det, logits, 0.0), 1 / (1 + np.exp(-logits)))


def xyxy(face):
    return np.array([face.box.x1, face.box.y1, face.box.x2, face.box.y2])


def _tiny_verifier(tmp_path, logit_bias: float, delta_bias):
    """An int8 verifier whose outputs are constants: zero kernels, given biases."""
    needs_tensorflow()
    from convert.quantize import to_int8_tflite
    from convert.verifier import build_model
    from edge.inference.detectors.verified import VERIFIER_FORMAT

    model = build_model(32, None)
    for name, bias in (("face_logit", [logit_bias]), ("box_delta", delta_bias)):
        layer = model.get_layer(name)
        k, _ = layer.get_weights()
        layer.set_weights([np.zeros_like(k), np.asarray(bias, np.float32)])
    rng = np.random.default_rng(0)
    path = to_int8_tflite(model, lambda: iter(rng.integers(0, 255, (8, 32, 32, 3), np.uint8)),
                          tmp_path / "v.tflite")
    path.with_suffix(".json").write_text(json.dumps(
        {"format": VERIFIER_FORMAT, "window": {"margin": 0.3}}))
    shutil.copy(FACE_DETECTOR, tmp_path / "d.tflite")
    shutil.copy(FACE_DETECTOR.with_suffix(".json"), tmp_path / "d.json")
    return path


def _spec(tmp_path, **change):
    spec = {"format": "maskdoor-verified/1", "detector": "d.tflite", "verifier": "v.tflite",
            "proposal_threshold": 0.05, "alpha": 1.0, "score_threshold": 0.5, **change}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    return tmp_path / "s.json"


def test_a_verifier_that_agrees_with_every_box_gives_the_detector_back(tmp_path):
    """Constant outputs: face logit high, no box change. With alpha 1 the verified detector
    must return exactly the detector's faces; with a box delta every box moves by it."""
    from edge.inference.detectors.tflite_ssd import FaceDetector
    from edge.inference.detectors.verified import VerifiedDetector
    from edge.inference.detectors import load_detector

    _tiny_verifier(tmp_path, 8.0, [0, 0, 0, 0])
    image = cv2.imread(str(FIXTURE_IMAGES[0]))
    plain = FaceDetector(tmp_path / "d.tflite")
    det = load_detector(_spec(tmp_path), threshold=0.3)
    assert isinstance(det, VerifiedDetector)
    assert "verified at 32x32" in det.describe()
    assert det.model_paths()[-1].name == "v.tflite"
    want = plain.detect(image, threshold=0.3)
    got = det.detect(image)
    assert len(want) >= 1 and len(got) == len(want)
    for a, b in zip(sorted(want, key=lambda f: f.box.x1), sorted(got, key=lambda f: f.box.x1)):
        assert np.allclose(xyxy(a), xyxy(b), atol=1e-3)
        assert b.score == pytest.approx(a.score, abs=1e-6)


def test_the_verifier_box_output_moves_each_box_within_its_window(tmp_path):
    from edge.inference.detectors.tflite_ssd import FaceDetector
    from edge.inference.detectors import load_detector

    _tiny_verifier(tmp_path, 8.0, [0.05, -0.05, 0.05, -0.05])
    image = cv2.imread(str(FIXTURE_IMAGES[0]))
    want = FaceDetector(tmp_path / "d.tflite").detect(image, threshold=0.5)
    got = load_detector(_spec(tmp_path)).detect(image)
    assert len(got) == len(want) >= 1
    for a, b in zip(sorted(want, key=lambda f: f.box.x1), sorted(got, key=lambda f: f.box.x1)):
        side = max(a.box.width, a.box.height) * 1.6
        moved = xyxy(b) - xyxy(a)
        # int8 rounds the constant a little; clipping at the image edge may stop a move
        inside = (a.box.x1 > side * 0.06 and a.box.y2 < image.shape[0] - side * 0.06)
        if inside:
            assert np.allclose(moved, side * np.array([0.05, -0.05, 0.05, -0.05]),
                               atol=side * 0.004)


@pytest.mark.parametrize("change, message", [
    ({"verifier": "gone.tflite"}, "'verifier' must name a model file"),
    ({"alpha": 2}, "'alpha' missing or not a number"),
    ({"score_threshold": None}, "'score_threshold' missing"),
])
def test_a_bad_verified_spec_names_the_key_and_the_fix(tmp_path, change, message):
    from edge.inference.detectors import load_detector

    _tiny_verifier(tmp_path, 0.0, [0, 0, 0, 0])
    with pytest.raises(ModelError, match=message):
        load_detector(_spec(tmp_path, **change))


def test_a_verifier_without_its_sidecar_format_is_refused(tmp_path):
    from edge.inference.detectors import load_detector

    v = _tiny_verifier(tmp_path, 0.0, [0, 0, 0, 0])
    v.with_suffix(".json").write_text(json.dumps({"window": {"margin": 0.3}}))
    with pytest.raises(ModelError, match="not a face verifier sidecar"):
        load_detector(_spec(tmp_path))


def test_box_step_applies_part_of_the_correction():
    props = np.array([[100, 100, 140, 150]], np.float32)
    win = verifier.windows(props, 0.3)
    deltas = np.array([[0.1, 0.0, 0.1, 0.0]], np.float32)
    full, _ = verifier.rescore(props, np.ones(1), win, np.zeros(1), deltas, 1.0, 0.45)
    half, _ = verifier.rescore(props, np.ones(1), win, np.zeros(1), deltas, 1.0, 0.45, step=0.5)
    side = win[0, 2] - win[0, 0]
    assert np.allclose(full[0] - props[0], [0.1 * side, 0, 0.1 * side, 0], atol=1e-3)
    assert np.allclose(half[0] - props[0], [0.05 * side, 0, 0.05 * side, 0], atol=1e-3)


def test_the_shipped_verified_detector_loads_by_name_and_finds_the_fixture_faces():
    """'verified' is the default of detect and eval: the shipped `full` plus the verifier,
    whose spec the export wrote (alpha, box step and threshold chosen on val)."""
    from edge.cli import build_parser
    from edge.inference.detectors.tflite_ssd import FaceDetector
    from edge.inference.detectors.verified import VerifiedDetector
    from edge.inference.detectors import load_detector
    from models import FACE_DETECTOR_VERIFIED, detector_path

    assert detector_path("verified") == FACE_DETECTOR_VERIFIED
    assert build_parser().parse_args(["detect", "x.jpg"]).model == FACE_DETECTOR_VERIFIED
    det = load_detector(detector_path("verified"))
    assert isinstance(det, VerifiedDetector) and isinstance(det.proposer, FaceDetector)
    assert det.proposer.path == FACE_DETECTOR and 0 < det.box_step <= 1
    image = cv2.imread(str(FIXTURE_IMAGES[0]))
    faces = det.detect(image)
    plain = FaceDetector(FACE_DETECTOR).detect(image)
    assert faces and all(f.score >= det.score_threshold for f in faces)
    # every face the plain detector finds is found again (the verifier re-boxes, not loses)
    for p in plain:
        assert max(p.box.iou(f.box) for f in faces) >= 0.5


def test_the_shipped_accurate_detector_is_the_verifier_over_four_passes():
    """'accurate' (for photos): the verifier behind the four fused passes, its alpha, box step
    and threshold chosen on val by `convert verifier-spec`; it finds every annotated face of
    at least 40 px in the fixture photos."""
    from conftest import FIXTURES
    from convert.measure.dataset import load_voc_dataset
    from edge.inference.detectors.multipass import MultiPassDetector
    from edge.inference.detectors.verified import VerifiedDetector
    from edge.inference.detectors import load_detector
    from models import FACE_DETECTOR_4PASS, FACE_DETECTOR_ACCURATE, FACE_VERIFIER, detector_path

    assert detector_path("accurate") == FACE_DETECTOR_ACCURATE
    det = load_detector(detector_path("accurate"))
    assert isinstance(det, VerifiedDetector) and isinstance(det.proposer, MultiPassDetector)
    assert det.proposer.path == FACE_DETECTOR_4PASS and det.verifier.path == FACE_VERIFIER
    assert len(det.model_paths()) == 5
    assert det.describe() == f"{det.proposer.describe()}, verified at 96x96"
    for sample in load_voc_dataset(FIXTURES / "andrewmvd"):
        faces = det.detect(cv2.imread(str(sample.image)))
        assert all(f.score >= det.score_threshold for f in faces)
        for obj in sample.objects:
            if obj.box.width >= 40:
                best = max((f.box.iou(obj.box) for f in faces), default=0.0)
                assert best >= 0.5, f"{sample.image.name}: {obj.label} face {obj.box} missed"


def test_verifier_train_and_export_end_to_end_on_the_fixture_photos(shared_weights, tmp_path):
    """`convert verifier-train` then `verifier-export` on a tiny split: proposals with targets,
    one epoch selected on val end to end, an int8 verifier the device loads, and a spec whose
    alpha, box step and threshold come from the val candidates."""
    needs_tensorflow()
    from conftest import FIXTURES
    from convert.verifier import ProposalSet, export, proposal_sets, train, write_spec
    from edge.inference.detectors.multipass import MultiPassDetector
    from edge.inference.detectors.verified import VerifiedDetector
    from edge.inference.detectors import load_detector

    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "andrewmvd", data / "detect" / "andrewmvd")
    names = sorted(p.name for p in (data / "detect" / "andrewmvd" / "images").iterdir())
    rows = [f"andrewmvd/images/{n},train" for n in names[:-2]] + \
        [f"andrewmvd/images/{n},val" for n in names[-2:]]
    (data / "detect" / "splits.csv").write_text("image,split\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    tr, va = proposal_sets(FACE_DETECTOR, data, run)
    ps = ProposalSet.load(tr)
    assert len(ps.gt) == len(names) - 2 and set(np.unique(ps.label)) <= {-1, 0, 1}
    faces = ps.label == 1
    assert faces.any() and ps.has_box[faces].all(), "every face proposal has a box target"
    assert np.all(np.abs(ps.delta[~ps.has_box]) == 0)
    best = train(tr, va, shared_weights, run, epochs=1, batch_size=16)
    assert best["epoch"] == 1 and (run / "best.weights.h5").is_file()
    models = tmp_path / "models"
    models.mkdir()
    for ext in (".tflite", ".json"):
        shutil.copy(FACE_DETECTOR.with_suffix(ext), models / f"d{ext}")
    spec = export(run, tr, models / "d.tflite", data, models / "v.tflite", models / "s.json",
                  calibration=16)
    assert {"alpha", "box_step", "score_threshold"} <= spec.keys()
    assert len(spec["val"]["candidates"]) == 8
    det = load_detector(models / "s.json")
    assert isinstance(det, VerifiedDetector) and det.verifier.kind == "int8"
    det.detect(cv2.imread(str(FIXTURE_IMAGES[0])))

    # `verifier-spec`: the same verifier behind a multi-pass detector, chosen on val again
    (models / "m.json").write_text(json.dumps({
        "format": "maskdoor-multipass/1", "score_threshold": 0.5,
        "passes": [{"model": "d.tflite", "flip": True}]}))
    spec = write_spec(models / "v.tflite", models / "m.json", data, models / "mv.json")
    assert spec["detector"] == "m.json" and spec["max_proposals"] == 50
    det = load_detector(models / "mv.json")
    assert isinstance(det, VerifiedDetector) and isinstance(det.proposer, MultiPassDetector)
    det.detect(cv2.imread(str(FIXTURE_IMAGES[0])))
    with pytest.raises(ValueError, match="the detector must sit in the spec's folder"):
        write_spec(models / "v.tflite", FACE_DETECTOR, data, models / "x.json")
