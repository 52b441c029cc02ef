"""The shipped int8 mask classifier, and the crop rule the device shares with training."""

import json

import cv2
import numpy as np
import pytest

from conftest import FIXTURES
from edge.inference.classifier import MaskClassifier
from edge.inference.crops import crop, square_crop_box
from convert.measure.dataset import load_voc_dataset
from edge.errors import ModelError
from edge.types import Box, Face
from models import MASK_CLASSIFIER


@pytest.fixture(scope="module")
def classifier():
    return MaskClassifier(MASK_CLASSIFIER)


def test_square_crop_rule():
    b = square_crop_box(Box(10, 20, 50, 80), 0.15)  # 40 x 60 face
    assert b.width == pytest.approx(60 * 1.3) and b.height == pytest.approx(60 * 1.3)
    assert b.center == (30, 50)


def test_crop_replicates_the_border_outside_the_frame():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:, :50] = 255
    c = crop(img, square_crop_box(Box(-20, 10, 30, 60), 0.0), 32)
    assert c.shape == (32, 32, 3) and c[:, 0].min() == 255  # left border replicated


def test_model_describes_itself(classifier):
    meta = json.loads(MASK_CLASSIFIER.with_suffix(".json").read_text())
    assert classifier.labels == tuple(meta["labels"]) == ("with_mask", "without_mask",
                                                           "incorrect_mask")
    assert classifier.model.input.dtype is np.uint8 and classifier.size == meta_size(meta)
    assert meta["training"]["val_int8_float_agreement"] >= 0.99


def meta_size(meta):
    return int(meta["architecture"].split(", ")[1].split("x")[0])


def test_verdicts_on_golden_faces(classifier):
    """Annotated masked and unmasked faces of at least 60 px in the fixtures get their verdict.
    A mask below the nose (the hard class, whose recall `maskdoor eval` reports) must at least
    not be called 'without_mask'."""
    checked = 0
    for s in load_voc_dataset(FIXTURES / "andrewmvd"):
        image = cv2.imread(str(s.image))
        faces = [Face(o.box, 1.0) for o in s.objects if o.box.width >= 60]
        labels = [o.label for o in s.objects if o.box.width >= 60]
        for f, want in zip(classifier.classify(image, faces), labels):
            if want == "incorrect_mask":
                assert f.label != "without_mask", f"{s.image.name}: mask below nose called unmasked"
            else:
                assert f.label == want, f"{s.image.name}: {want} face called {f.label}"
            assert set(f.probs) == set(classifier.labels)
            assert sum(f.probs.values()) == pytest.approx(1.0, abs=1e-3)
            assert f.label_score == f.probs[f.label]
            checked += 1
    assert checked >= 6


def test_flag_threshold_decides_masked_or_not(classifier):
    i = {lab: k for k, lab in enumerate(classifier.labels)}
    t = classifier.flag_threshold
    p = np.zeros(3)
    p[i["with_mask"]], p[i["without_mask"]], p[i["incorrect_mask"]] = 1 - t + 0.01, t - 0.02, 0.01
    assert classifier.labels[classifier.verdict(p)] == "with_mask"
    p[i["with_mask"]], p[i["without_mask"]], p[i["incorrect_mask"]] = 1 - t - 0.01, 0.005, t + 0.005
    assert classifier.labels[classifier.verdict(p)] == "incorrect_mask"


def test_missing_sidecar(tmp_path):
    lone = tmp_path / "m.tflite"
    lone.write_bytes(MASK_CLASSIFIER.read_bytes())
    with pytest.raises(ModelError, match="m.json: missing"):
        MaskClassifier(lone)


def test_a_batch_of_faces_gives_the_same_verdicts_as_one_by_one():
    image = cv2.imread(str(sorted((FIXTURES / "andrewmvd" / "images").iterdir())[0]))
    h, w = image.shape[:2]
    faces = [Face(Box(x, y, x + 60, y + 72), 0.9) for x, y in
             ((0, 0), (w // 3, h // 4), (w - 60, h - 72))]
    batched = MaskClassifier(MASK_CLASSIFIER, batch=True)
    single = MaskClassifier(MASK_CLASSIFIER, batch=False)
    a = batched.probabilities_batch(image, faces)
    assert batched.model.batch == 3, "three faces went through in one call"
    b = single.probabilities_batch(image, faces)
    assert single.model.batch == 1
    assert a.shape == (3, 3) and np.allclose(a, b, atol=1e-6)
    assert np.allclose(batched.probabilities_batch(image, faces[:1]), b[:1], atol=1e-6)
    assert [f.label for f in batched.classify(image, faces)] == \
        [f.label for f in single.classify(image, faces)]


def test_a_model_that_refuses_batches_classifies_one_by_one(monkeypatch):
    """An Edge TPU model has a fixed batch of one: batching switches itself off."""
    image = cv2.imread(str(sorted((FIXTURES / "andrewmvd" / "images").iterdir())[0]))
    faces = [Face(Box(0, 0, 60, 72), 0.9), Face(Box(100, 50, 160, 122), 0.9)]
    cls = MaskClassifier(MASK_CLASSIFIER, batch=True)
    expected = MaskClassifier(MASK_CLASSIFIER, batch=False).probabilities_batch(image, faces)

    def refuse(n):
        if n != 1:
            raise ModelError(f"batch of {n} refused")
    monkeypatch.setattr(cls.model, "set_batch", refuse)
    assert np.allclose(cls.probabilities_batch(image, faces), expected, atol=1e-6)
    assert cls.runner.batch is False
