"""The classifier ensemble: the shipped 'pair' spec, its loader, its errors, and the convert
command that writes it."""

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import FIXTURES, FIXTURE_IMAGES
from edge.inference.classifier import EnsembleClassifier, MaskClassifier, load_classifier
from edge.cli import main
from convert.measure.dataset import load_voc_dataset
from edge.errors import ModelError
from edge.types import Face
from edge.defaults import PHOTOS
from models import MASK_CLASSIFIER, MASK_CLASSIFIER_160, MASK_CLASSIFIER_PAIR, classifier_path


@pytest.fixture(scope="module")
def pair():
    return load_classifier("pair")


@pytest.fixture(scope="module")
def faces():
    """(image, faces) of the fixture photos, annotated faces of at least 40 px."""
    out = []
    for s in load_voc_dataset(FIXTURES / "andrewmvd"):
        fs = [Face(o.box, 1.0) for o in s.objects if o.box.width >= 40]
        if fs:
            out.append((cv2.imread(str(s.image)), fs))
    return out


def test_pair_is_the_photo_default_and_averages_its_members(pair, faces):
    assert classifier_path(PHOTOS.classifier) == MASK_CLASSIFIER_PAIR
    assert isinstance(pair, EnsembleClassifier)
    assert pair.model_paths() == [MASK_CLASSIFIER, MASK_CLASSIFIER_160]
    assert pair.describe().startswith("int8 96x96+160x160, averaged")
    single, big = MaskClassifier(MASK_CLASSIFIER), MaskClassifier(MASK_CLASSIFIER_160)
    assert pair.labels == single.labels == big.labels
    for image, fs in faces:
        want = (single.probabilities_batch(image, fs) + big.probabilities_batch(image, fs)) / 2
        got = pair.probabilities_batch(image, fs)
        np.testing.assert_allclose(got, want, atol=1e-9)
        for f, p in zip(pair.classify(image, fs), got):
            assert f.label == pair.labels[pair.verdict(p)]
            assert f.probs == pytest.approx(dict(zip(pair.labels, p)))


def test_pair_threshold_and_val_figures_come_from_the_spec(pair):
    spec = json.loads(MASK_CLASSIFIER_PAIR.read_text())
    assert pair.flag_threshold == spec["flag_threshold"]
    ens = spec["val"]["ensemble"]
    for member in spec["val"]["members"].values():  # the reason it ships: better than either
        assert (ens["val_balanced_accuracy"] + ens["val_mask_vs_not"]
                > member["val_balanced_accuracy"] + member["val_mask_vs_not"])
    assert spec["val"]["flag_threshold_choice"]["masked_false_alarm"] <= 0.02


def test_single_names_the_96px_model_alone():
    single = load_classifier("single")
    assert isinstance(single, MaskClassifier) and single.model_paths() == [MASK_CLASSIFIER]


def _spec(tmp_path, **change):
    spec = json.loads(MASK_CLASSIFIER_PAIR.read_text())
    spec.update(change)
    for m in json.loads(MASK_CLASSIFIER_PAIR.read_text())["models"]:
        for ext in (".tflite", ".json"):
            src = (MASK_CLASSIFIER_PAIR.parent / m).with_suffix(ext)
            shutil.copy(src, tmp_path / src.name)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("change, message", [
    ({"format": "maskdoor-multipass/1"}, "not a classifier ensemble spec"),
    ({"models": []}, "'models' must be a non-empty list"),
    ({"models": ["nowhere.tflite"]}, "member model nowhere.tflite not found"),
    ({"flag_threshold": "high"}, "'flag_threshold' missing or not a number"),
    ({"flag_threshold": 1.5}, "'flag_threshold' missing or not a number"),
])
def test_bad_specs_are_clear_errors(tmp_path, change, message):
    with pytest.raises(ModelError, match=message):
        load_classifier(_spec(tmp_path, **change))


def test_members_must_share_labels_and_files_must_exist(tmp_path):
    path = _spec(tmp_path)
    side = tmp_path / MASK_CLASSIFIER_160.with_suffix(".json").name
    meta = json.loads(side.read_text())
    meta["labels"] = ["without_mask", "with_mask", "incorrect_mask"]
    side.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="members must agree"):
        load_classifier(path)
    with pytest.raises(ModelError, match="classifier spec not found"):
        load_classifier(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_classifier(tmp_path / "broken.json")
    with pytest.raises(ModelError, match="load it with edge.inference.classifier.load_classifier"):
        MaskClassifier(MASK_CLASSIFIER_PAIR)


def test_detect_takes_a_classifier_by_name(capsys):
    runs = {}
    for name in ("pair", "single"):
        assert main(["detect", "--json", "--classifier", name, str(FIXTURE_IMAGES[1])]) == 0
        runs[name] = json.loads(capsys.readouterr().out)["faces"]
    assert len(runs["pair"]) == len(runs["single"]) >= 1
    assert runs["pair"][0]["probs"] != runs["single"][0]["probs"]


def test_convert_writes_an_ensemble_spec_chosen_on_val(tmp_path):
    """`convert classifier-ensemble` over two exported models, on the val crops of a (here
    tiny) dataset; the spec loads through the device's loader."""
    from convert.classifier import write_ensemble
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "andrewmvd", data / "detect" / "andrewmvd")
    rows = [f"detect/andrewmvd/images/{p.name},val"
            for p in (data / "detect" / "andrewmvd" / "images").iterdir()]
    (data / "splits.csv").write_text("image,split\n" + "\n".join(rows) + "\n")
    for name, src in (("a", MASK_CLASSIFIER), ("b", MASK_CLASSIFIER_160)):
        for ext in (".tflite", ".json"):
            shutil.copy(src.with_suffix(ext), tmp_path / (name + ext))
    with pytest.raises(ValueError, match="must sit in the spec's folder"):
        write_ensemble(tmp_path / "sub" / "s.json", [tmp_path / "a.tflite"], data)
    spec = write_ensemble(tmp_path / "s.json", [tmp_path / "a.tflite", tmp_path / "b.tflite"],
                          data)
    cls = load_classifier(tmp_path / "s.json")
    assert isinstance(cls, EnsembleClassifier) and cls.flag_threshold == spec["flag_threshold"]
    assert set(spec["val"]["members"]) == {"a.tflite", "b.tflite"}
    n = sum(1 for s in load_voc_dataset(data / "detect") for o in s.objects
            if o.box.width >= 4 and o.box.height >= 4)
    assert spec["val"]["crops"] == n
    assert 0.3 <= spec["flag_threshold"] <= 0.95


def test_the_appliance_uses_single_unless_configured():
    from edge import config
    from edge.service import build_models
    _, cls = build_models(config.load(None, {}))
    assert isinstance(cls, MaskClassifier) and cls.model_paths() == [MASK_CLASSIFIER]
    _, cls = build_models(config.load(None, {"classifier.model": "pair"}))
    assert isinstance(cls, EnsembleClassifier)
