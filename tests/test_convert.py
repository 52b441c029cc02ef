"""convert/: quantise a rebuilt SSD and load it through the device's own loader."""

import json
import shlex

import cv2
import numpy as np
import pytest

from conftest import FIXTURE_IMAGES, needs_tensorflow


@pytest.mark.parametrize("arch", ["res10", "mnv2"])
def test_int8_detector_loads_and_detects_through_edge(arch, shared_weights, tmp_path):
    """Both architectures `convert detector-train --arch` offers quantise to int8, load
    through the device's loader and track their float model."""
    needs_tensorflow()
    from convert.detector import build
    from convert.quantize import to_int8_tflite
    from edge.inference.detectors.tflite_ssd import FaceDetector, softmax_face
    from convert.measure.opcount import op_counts

    hw = (160, 160) if arch == "res10" else (128, 128)
    model, spec = build(shared_weights, hw, arch)
    images = [cv2.resize(cv2.imread(str(p)), hw[::-1]) for p in FIXTURE_IMAGES]
    out = to_int8_tflite(model, lambda: iter(images), tmp_path / "d.tflite", batch_of_one=True)
    _, ops = op_counts(out)  # static shapes, only ops the Edge TPU compiler maps
    assert not {"SHAPE", "TILE", "SPACE_TO_BATCH_ND"} & set(ops), ops
    (tmp_path / "d.json").write_text(json.dumps({"anchors": spec.to_dict(), "score_threshold": 0.3}))
    det = FaceDetector(out)
    assert det.model.input.dtype is np.uint8 and det.input_hw == hw
    det.detect(images[0])
    # int8 logits track the float model's
    det.preprocess(images[1])
    loc_q, score_q = det.raw()
    ref = model(images[1][None].astype(np.float32), training=False)
    score_f = softmax_face(ref["conf"].numpy()[0])
    assert np.corrcoef(score_q, score_f)[0, 1] > 0.95
    assert np.corrcoef(loc_q.ravel(), ref["loc"].numpy()[0].ravel())[0, 1] > 0.95


def test_shipped_detector_priors_match_convert(shared_weights):
    needs_tensorflow()
    from convert.detector import build
    from edge.inference.tflite import load_sidecar
    from models import FACE_DETECTOR

    meta = load_sidecar(FACE_DETECTOR)
    arch = meta["training"].get("arch", "res10")  # sidecars before the choice: res10
    model, spec = build(shared_weights, tuple(meta["anchors"]["input_size"]), arch)
    assert spec.to_dict() == meta["anchors"], "shipped sidecar and convert/ disagree on priors"
    assert model.outputs[0].shape[1] == spec.count or model.outputs[1].shape[1] == spec.count


def test_matching_marks_tiny_faces_ignored_and_forces_a_prior_per_face():
    from convert.detector import match_targets
    from edge.inference import ssd
    s = ssd.AnchorSpec(input_size=(64, 64), feature_maps=(
        ssd.FeatureMapSpec(size=(8, 8), step=(8, 8), boxes=((8, 10), (16, 19))),))
    p = ssd.priors(s)
    corners = np.concatenate([p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2], 1)
    boxes = np.array([[10, 10, 27, 30], [50, 50, 52, 52]], np.float32)  # normal + 2 px face
    labels, loc = match_targets(p, corners, boxes, (64, 64), s.variances)
    assert (labels == 1).sum() >= 1
    assert (labels == -1).any()
    pos = np.flatnonzero(labels == 1)
    decoded = ssd.decode(loc[pos], p[pos], s.variances) * 64
    np.testing.assert_allclose(decoded, np.repeat(boxes[:1], len(pos), 0), atol=1e-3)


def test_multipass_spec_gets_its_threshold_on_val(tmp_path):
    """`convert detector-multipass`: the spec over models in its folder, threshold chosen on
    the val images of a (here tiny) dataset, loaded by the device's loader."""
    import shutil

    from conftest import FIXTURES
    from convert.detector import write_multipass
    from edge.inference.detectors.multipass import MultiPassDetector
    from edge.inference.detectors import load_detector
    from models import FACE_DETECTOR, MODELS_DIR

    FACE_DETECTOR_544 = MODELS_DIR / "face_detector_544.tflite"
    data = tmp_path / "detect"
    shutil.copytree(FIXTURES / "andrewmvd", data / "andrewmvd")
    rows = [f"andrewmvd/images/{p.name},val" for p in (data / "andrewmvd" / "images").iterdir()]
    (data / "splits.csv").write_text("image,split\n" + "\n".join(rows) + "\n")
    for ext in (".tflite", ".json"):
        shutil.copy(FACE_DETECTOR.with_suffix(ext), tmp_path / ("a" + ext))
    with pytest.raises(ValueError, match="must sit in the spec's folder"):
        write_multipass(tmp_path / "sub" / "s.json", [tmp_path / "a.tflite"], True, data)
    thr = write_multipass(tmp_path / "s.json", [tmp_path / "a.tflite"], True, data)
    det = load_detector(tmp_path / "s.json")
    assert isinstance(det, MultiPassDetector) and det.pass_count() == 2
    assert det.score_threshold == thr and 0.3 <= thr <= 1.0
    spec = json.loads((tmp_path / "s.json").read_text())
    assert spec["training"]["val_int8"]["recall"][">=40"] == 1.0  # every fixture face >= 40 px
    # scale-aware: only the passes at a larger input than the first report faces up to
    # --max-face (here a 544x544 one); another pass at the first's size sees every face
    for ext in (".tflite", ".json"):
        shutil.copy(FACE_DETECTOR_544.with_suffix(ext), tmp_path / ("b" + ext))
    write_multipass(tmp_path / "s2.json", [tmp_path / "a.tflite", tmp_path / "a.tflite",
                                           tmp_path / "b.tflite"], False, data, max_face=96)
    spec = json.loads((tmp_path / "s2.json").read_text())
    assert [p.get("max_face") for p in spec["passes"]] == [None, None, 96]
    assert "(faces <= 96 px)" in load_detector(tmp_path / "s2.json").describe()


def test_ignore_boxes_are_neither_faces_nor_background():
    from convert.detector import match_targets
    from edge.inference import ssd
    s = ssd.AnchorSpec(input_size=(64, 64), feature_maps=(
        ssd.FeatureMapSpec(size=(8, 8), step=(8, 8), boxes=((8, 10), (16, 19))),))
    p = ssd.priors(s)
    corners = np.concatenate([p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2], 1)
    boxes = np.array([[10, 10, 27, 30], [40, 40, 57, 60]], np.float32)
    both, _ = match_targets(p, corners, boxes, (64, 64), s.variances)
    one, _ = match_targets(p, corners, boxes, (64, 64), s.variances, ignore=[False, True])
    only_first, _ = match_targets(p, corners, boxes[:1], (64, 64), s.variances)
    second = ssd.iou_matrix(corners, boxes[1:] / 64)[:, 0] >= 0.2
    assert (both[second] == 1).any() and not (one == 1)[second].any()
    assert (one[second] == -1).all()
    np.testing.assert_array_equal(one == 1, only_first == 1)


def test_augment_says_which_boxes_survive_the_crop():
    from convert.augment import augment
    rng = np.random.default_rng(3)
    img = np.full((200, 300, 3), 90, np.uint8)
    boxes = np.array([[10, 10, 40, 40], [250, 150, 290, 190], [140, 90, 160, 110]], np.float32)
    seen_drop = False
    for _ in range(40):
        out, b, kept = augment(rng, img, boxes, (64, 64))
        assert out.shape == (64, 64, 3) and len(b) == len(kept)
        assert set(kept.tolist()) <= {0, 1, 2} and list(kept) == sorted(kept)
        seen_drop |= len(kept) < 3
    assert seen_drop


def test_pseudo_ignore_finds_unannotated_faces_only(tmp_path):
    """`convert detector-pseudo-ignore` on a tiny train split where one face's annotation was
    removed: that face (and no annotated one) becomes an ignore box, read back for training."""
    import shutil
    import xml.etree.ElementTree as ET

    from conftest import FIXTURES
    from convert.detector import image_key, load_images, pseudo_ignore, read_ignore
    from edge.inference import ssd
    from convert.measure.dataset import load_voc_dataset
    from models import FACE_DETECTOR

    data = tmp_path / "detect"
    shutil.copytree(FIXTURES / "andrewmvd", data / "andrewmvd")
    rows = [f"andrewmvd/images/{p.name},train" for p in (data / "andrewmvd" / "images").iterdir()]
    (data / "splits.csv").write_text("image,split\n" + "\n".join(rows) + "\n")
    sample = max(load_voc_dataset(data, "train"), key=lambda s: len(s.objects))
    xml = data / "andrewmvd" / "annotations" / (sample.image.stem + ".xml")
    tree = ET.parse(xml)
    objs = tree.getroot().findall("object")
    dropped = max(objs, key=lambda o: float(o.find("bndbox/xmax").text)
                  - float(o.find("bndbox/xmin").text))
    tree.getroot().remove(dropped)
    tree.write(xml)
    box = [float(dropped.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")]

    spec = pseudo_ignore(FACE_DETECTOR, data, tmp_path / "ignore.json", min_score=0.5)
    images = read_ignore(tmp_path / "ignore.json")
    assert spec["boxes"] == sum(len(v) for v in images.values()) >= 1
    found = np.array(images[image_key(sample.image)], np.float32)
    assert ssd.iou_matrix(np.array([box], np.float32), found).max() >= 0.5
    for s in load_voc_dataset(data, "train"):  # no ignore box sits on an annotated face
        if image_key(s.image) in images and len(s.boxes):
            ious = ssd.iou_matrix(np.array(images[image_key(s.image)], np.float32),
                                  np.asarray(s.boxes, np.float32).reshape(-1, 4))
            assert ious.max() < 0.3
    sample = next(s for s in load_voc_dataset(data, "train") if s.image == sample.image)
    _, boxes, flags = load_images([sample], 800, images)[0]
    assert flags.sum() == len(found) and len(boxes) == len(sample.objects) + len(found)
    assert not flags[:len(sample.objects)].any()

    (tmp_path / "bad.json").write_text('{"format": "x"}')
    with pytest.raises(ValueError, match="detector-pseudo-ignore"):
        read_ignore(tmp_path / "bad.json")


def test_ssdlite_anchor_spec_matches_its_heads_at_any_size(tmp_path):
    """SSDLite-MobileNetV2: one output row per prior of the anchor spec that training matches
    against (``specs_for``), at square and 4:3 sizes; every prior starts at p(face) = 0.01."""
    needs_tensorflow()
    from convert.detector import specs_for
    from convert.ssdlite import PRIOR_FACE, PRIOR_WIDTHS, anchor_spec, build_ssdlite

    model, spec = build_ssdlite(None, (None, None))
    assert spec is None
    for hw in ((128, 128), (192, 256), (224, 160)):
        out = model(np.zeros((1, *hw, 3), np.float32))
        spec = anchor_spec(hw)
        assert out["loc"].shape == (1, spec.count, 4) and out["conf"].shape == (1, spec.count, 2)
        assert spec.feature_maps[0].size == (hw[0] // 8, hw[1] // 8)
    for size, train_spec in specs_for(tmp_path, (128, 256), "mnv2").items():
        out = model(np.zeros((1, size, size, 3), np.float32))
        assert out["conf"].shape == (1, train_spec.count, 2)
    for i in range(len(PRIOR_WIDTHS)):
        bias = model.get_layer(f"head{i}_conf_pw").get_weights()[1]
        face = 1 / (1 + np.exp(bias[0::2] - bias[1::2]))
        np.testing.assert_allclose(face, PRIOR_FACE, rtol=1e-4)


def test_ssdlite_reads_bgr_like_mobilenetv2_reads_rgb(shared_weights):
    """The BGR->RGB swap folded into the first convolution: the backbone features of a BGR image
    are Keras MobileNetV2's features of the same image in RGB scaled to [-1, 1]."""
    needs_tensorflow()
    import keras

    from convert.ssdlite import BACKBONE_FILE, TAPS, build_ssdlite

    model, _ = build_ssdlite(shared_weights / BACKBONE_FILE, (128, 128))
    ours = keras.Model(model.inputs, model.get_layer(TAPS[-1]).output)
    ref = keras.applications.MobileNetV2(input_shape=(128, 128, 3), include_top=False,
                                         weights=str(shared_weights / BACKBONE_FILE))
    bgr = cv2.resize(cv2.imread(str(FIXTURE_IMAGES[0])), (128, 128)).astype(np.float32)
    a = ours(bgr[None]).numpy()
    b = ref((bgr[None, ..., ::-1] / 127.5 - 1.0).astype(np.float32)).numpy()
    np.testing.assert_allclose(a, b, atol=1e-3 * max(1.0, float(np.abs(b).max())))


def test_detector_arch_errors_name_the_fix(tmp_path):
    needs_tensorflow()
    from convert.detector import build, run_arch

    with pytest.raises(ValueError, match="expected one of res10, mnv2"):
        build(tmp_path, (128, 128), "yolo")
    with pytest.raises(FileNotFoundError, match="MobileNetV2 ImageNet backbone is missing"):
        build(tmp_path, (128, 128), "mnv2")
    assert run_arch(tmp_path) == "res10"  # runs from before the option existed
    (tmp_path / "config.json").write_text(json.dumps({"arch": "mnv2"}))
    assert run_arch(tmp_path) == "mnv2"


def test_detector_training_options_refuse_what_cannot_train(tmp_path):
    """`detector-train`'s options are checked before any data is read."""
    needs_tensorflow()
    from convert.detector import TrainOptions

    with pytest.raises(ValueError, match="multiples of 64"):
        TrainOptions(sizes=(256, 300))
    with pytest.raises(ValueError, match="expected one of res10, mnv2"):
        TrainOptions(arch="mnv2fpn")
    with pytest.raises(ValueError, match="select_on='all': expected one of >=40, door"):
        TrainOptions(select_on="all")
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        TrainOptions(init=tmp_path / "none.weights.h5")
    (tmp_path / "best.weights.h5").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"arch": "mnv2"}))
    with pytest.raises(ValueError, match="weights of a mnv2 run; train it with --arch mnv2"):
        TrainOptions(init=tmp_path / "best.weights.h5")
    assert TrainOptions(init=tmp_path / "best.weights.h5", arch="mnv2").arch == "mnv2"


def _tiny_split(data, detect="."):
    """The fixture photos as detect/ data in ``data / detect``, split by ``data/splits.csv``:
    the last two photos val, the others train."""
    import shutil

    from conftest import FIXTURES
    shutil.copytree(FIXTURES / "andrewmvd", data / detect / "andrewmvd")
    names = sorted(p.name for p in (data / detect / "andrewmvd" / "images").iterdir())
    folder = "" if detect == "." else f"{detect}/"
    rows = [f"{folder}andrewmvd/images/{n},{'val' if i >= len(names) - 2 else 'train'}"
            for i, n in enumerate(names)]
    (data / "splits.csv").write_text("image,split\n" + "\n".join(rows) + "\n")


def test_detector_training_end_to_end_saves_weights_the_export_loads(shared_weights, tmp_path):
    """`convert detector-train --arch mnv2` on a tiny dataset: it trains, scores the epoch on
    val, records the run and saves float weights that the export's fixed-size model loads."""
    needs_tensorflow()
    from convert.detector import TrainOptions, build, run_arch, train

    _tiny_split(tmp_path / "detect")
    run = train(tmp_path / "detect", shared_weights, tmp_path / "run",
                TrainOptions(epochs=1, batch_size=2, sizes=(128,), eval_size=128, arch="mnv2",
                             max_steps=2))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert config["arch"] == run_arch(tmp_path / "run") == "mnv2" and config["sizes"] == [128]
    assert history[0]["steps"] == 2 and best == history[0]
    assert 0.0 <= best["val_recall_>=40_at_p90"] <= 1.0 and len(best["loss"]) == 2
    model, _ = build(shared_weights, (128, 128), "mnv2")
    before = model.get_layer("head0_conf_pw").get_weights()[0].copy()
    model.load_weights(run)  # what `detector-export` quantises
    assert not np.allclose(before, model.get_layer("head0_conf_pw").get_weights()[0])


def test_classifier_crop_window_strays_like_a_detector_box():
    """The training crop's window: side x [0.85, 1.15], centre within +-8 % of the side."""
    needs_tensorflow()
    from convert.classifier import jitter_window
    rng = np.random.default_rng(0)
    u = np.array([jitter_window(rng) for _ in range(4000)])
    assert 0.85 <= u[:, 0].min() and u[:, 0].max() <= 1.15
    assert np.abs(u[:, 1:]).max() <= 0.08
    assert u[:, 0].std() > 0.05 and u[:, 1:].std(0).min() > 0.02  # it does stray


def test_classifier_train_keeps_the_best_epoch_and_exports_what_the_device_loads(
        shared_weights, tmp_path):
    """`convert classifier-train` then `classifier-export` on the fixture faces: every epoch in
    history.json, the best one (val balanced accuracy + mask-vs-not) in best.json and
    best.weights.h5, and an int8 model with its sidecar that the device's loader reads."""
    needs_tensorflow()
    from convert.classifier import export, train
    from edge.inference.classifier import MaskClassifier

    data = tmp_path / "data"
    _tiny_split(data, "detect")
    run = tmp_path / "run" / "64"
    best = train(data, shared_weights, run, size=64, epochs=2, batch_size=8,
                 cache=tmp_path / "run" / "crops.npz")
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and best["size"] == 64
    scores = [h["val_balanced_accuracy"] + h["val_mask_vs_not"] for h in history]
    assert best["epoch"] == 1 + scores.index(max(scores))
    assert {k: v for k, v in best.items() if k != "size"} == history[best["epoch"] - 1]
    meta = export(run, shared_weights, data, tmp_path / "m.tflite", calibration=8)
    cls = MaskClassifier(tmp_path / "m.tflite")
    assert cls.size == 64 and cls.labels == tuple(meta["labels"])
    assert meta["training"]["epoch"] == best["epoch"]


# The README's "Rebuilding the models" commands, after `python -m convert`.
REBUILD_RECIPE = """
detector-train --arch mnv2 --epochs 20 --lr 1e-3 --out runs/mnv2
detector-export --run runs/mnv2 --size 448
detector-export --run runs/mnv2 --size 256 --tune-for door --out models/face_detector_door.tflite
detector-train
detector-train --init runs/detector/best.weights.h5 --train-stem --epochs 6 --lr 1.5e-4 --out runs/detector_stem
detector-export --run runs/detector_stem --size 448 --out models/face_detector_res10.tflite
detector-export --run runs/detector_stem --size 544 --out models/face_detector_544.tflite
detector-export --run runs/detector_stem --size 768 --out models/face_detector_768.tflite
detector-multipass models/face_detector.tflite models/face_detector_res10.tflite models/face_detector_544.tflite models/face_detector_768.tflite --no-flip --max-face 128
detector-pseudo-ignore --model models/face_detector_res10.tflite --min-score 0.85 --out runs/s6/ignore85.json
verifier-train --out runs/verifier --epochs 5 --lr 3e-4 --ignore runs/s6/ignore85.json
verifier-export --run runs/verifier
verifier-spec --detector models/face_detector_4pass.json --spec models/face_detector_accurate.json
classifier-train --sizes 96 128
classifier-train --sizes 160 --out runs/classifier160
classifier-export --run runs/classifier/96
classifier-export --run runs/classifier160/160 --out models/mask_classifier_160.tflite
classifier-ensemble models/mask_classifier.tflite models/mask_classifier_160.tflite
"""


def test_the_rebuild_recipe_parses_and_every_command_has_help(capsys):
    """Each command of the recipe that built the shipped models parses with its flags (one
    subcommand each, no TensorFlow needed to parse); every subcommand answers --help."""
    from pathlib import Path

    from convert.__main__ import COMMANDS, build_parser

    parser = build_parser()
    parsed = [parser.parse_args(shlex.split(line)) for line in REBUILD_RECIPE.strip().splitlines()]
    assert {a.cmd for a in parsed} == set(COMMANDS) - {"detector-threshold"}
    mnv2, door, stem = parsed[0], parsed[2], parsed[4]
    assert (mnv2.arch, mnv2.epochs, mnv2.lr, mnv2.out) == ("mnv2", 20, 1e-3, Path("runs/mnv2"))
    assert door.size == (256, 256) and door.tune_for == "door"
    assert stem.train_stem and stem.init == Path("runs/detector/best.weights.h5")
    assert parsed[3].arch == "res10" and parsed[8].flip is False and parsed[8].max_face == 128
    assert parsed[13].sizes == [96, 128]
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit:
            parser.parse_args([name, "--help"])
        assert exit.value.code == 0 and f"python -m convert {name}" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a removed experiment is an error, not ignored
        parser.parse_args(["detector-train", "--qat"])
    capsys.readouterr()
