"""convert/: quantise a rebuilt SSD and load it through the device's own loader."""

import json

import cv2
import numpy as np
import pytest

from conftest import FIXTURE_IMAGES, needs_tensorflow


@pytest.mark.parametrize("arch", ["res10", "mnv2", "mnv2fpn"])
def test_int8_detector_loads_and_detects_through_edge(arch, shared_weights, tmp_path):
    """Both architectures `convert detector-train --arch` offers quantise to int8, load
    through the device's loader and track their float model."""
    needs_tensorflow()
    from convert.detector import build
    from convert.quantize import to_int8_tflite
    from edge.detector import FaceDetector, softmax_face
    from edge.opcount import op_counts

    hw = (160, 160) if arch == "res10" else (128, 128)
    model, spec = build(shared_weights, hw, arch)
    images = [cv2.resize(cv2.imread(str(p)), hw[::-1]) for p in FIXTURE_IMAGES]
    out = to_int8_tflite(model, lambda: iter(images), tmp_path / "d.tflite", batch_of_one=True)
    _, ops = op_counts(out)  # static shapes, only ops the Edge TPU compiler maps
    assert not {"SHAPE", "TILE", "SPACE_TO_BATCH_ND"} & set(ops), ops
    assert ("RESIZE_NEAREST_NEIGHBOR" in ops) == (arch == "mnv2fpn")
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
    from edge.detector import load_sidecar
    from models import FACE_DETECTOR

    meta = load_sidecar(FACE_DETECTOR)
    arch = meta["training"].get("arch", "res10")  # sidecars before the choice: res10
    model, spec = build(shared_weights, tuple(meta["anchors"]["input_size"]), arch)
    assert spec.to_dict() == meta["anchors"], "shipped sidecar and convert/ disagree on priors"
    assert model.outputs[0].shape[1] == spec.count or model.outputs[1].shape[1] == spec.count


def test_matching_marks_tiny_faces_ignored_and_forces_a_prior_per_face():
    from convert.detector import match_targets
    from edge import ssd
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
    from edge.detector import MultiPassDetector, load_detector
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
    from edge import ssd
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
    from edge import ssd
    from edge.dataset import load_voc_dataset
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


@pytest.mark.parametrize("arch", ["mnv2", "mnv2fpn"])
def test_ssdlite_anchor_spec_matches_its_heads_at_any_size(arch, tmp_path):
    """The SSDLite-MobileNetV2 alternative, plain and with the top-down path: one output row
    per prior of the anchor spec that training matches against (``specs_for``), at square and
    4:3 sizes; every prior starts at p(face) = 0.01."""
    needs_tensorflow()
    from convert.detector import specs_for
    from convert.ssdlite import PRIOR_FACE, PRIOR_WIDTHS, anchor_spec, build_ssdlite

    model, spec = build_ssdlite(None, (None, None), fpn=arch == "mnv2fpn")
    assert spec is None
    for hw in ((128, 128), (192, 256), (224, 160)):
        out = model(np.zeros((1, *hw, 3), np.float32))
        spec = anchor_spec(hw)
        assert out["loc"].shape == (1, spec.count, 4) and out["conf"].shape == (1, spec.count, 2)
        assert spec.feature_maps[0].size == (hw[0] // 8, hw[1] // 8)
    for size, train_spec in specs_for(tmp_path, (128, 256), arch).items():
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


def test_fpn_detector_warm_starts_from_a_plain_ssdlite_run(shared_weights, tmp_path):
    """--init of an mnv2 run into mnv2fpn copies every layer by name; the top-down laterals
    start at zero, so the FPN model's output equals the plain run's until training moves it."""
    needs_tensorflow()
    from convert.detector import build, load_init

    plain, _ = build(shared_weights, (None, None), "mnv2")
    for layer in plain.layers:  # stand-in for trained weights: perturb every head
        if layer.name.startswith("head"):
            layer.set_weights([w + 0.01 * np.random.default_rng(0).standard_normal(w.shape)
                               for w in layer.get_weights()])
    run = tmp_path / "run"
    run.mkdir()
    plain.save_weights(run / "best.weights.h5")
    (run / "config.json").write_text(json.dumps({"arch": "mnv2"}))
    fpn, _ = build(shared_weights, (None, None), "mnv2fpn")
    before = fpn.get_layer("head0_conf_pw").get_weights()[0].copy()
    load_init(fpn, run / "best.weights.h5", shared_weights, "mnv2fpn")
    assert not np.allclose(before, fpn.get_layer("head0_conf_pw").get_weights()[0])
    x = cv2.resize(cv2.imread(str(FIXTURE_IMAGES[0])), (128, 128)).astype(np.float32)[None]
    a, b = fpn(x), plain(x)
    np.testing.assert_allclose(a["conf"].numpy(), b["conf"].numpy(), atol=1e-5)
    np.testing.assert_allclose(a["loc"].numpy(), b["loc"].numpy(), atol=1e-5)
    # an FPN run does not fit the plain model; sides that are no multiple of 32 are refused
    fpn.save_weights(tmp_path / "fpn.weights.h5")
    (tmp_path / "config.json").write_text(json.dumps({"arch": "mnv2fpn"}))
    with pytest.raises(ValueError, match="does not fit arch mnv2"):
        load_init(plain, tmp_path / "fpn.weights.h5", shared_weights, "mnv2")
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        load_init(plain, tmp_path / "none.weights.h5", shared_weights, "mnv2")
    with pytest.raises(ValueError, match="multiples of 32"):
        build(shared_weights, (300, 300), "mnv2fpn")


def test_weight_average_tracks_and_swaps_in_and_out():
    needs_tensorflow()
    import keras
    import tensorflow as tf

    from convert.detector import WeightAverage

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    kernel = model.trainable_variables[0]
    start = keras.ops.convert_to_numpy(kernel).copy()
    average = WeightAverage(model.trainable_variables, 0.9)
    update = tf.function(average.update)
    kernel.assign(start + 1.0)
    update()  # first decay is min(0.9, 2/11): the new weights dominate
    np.testing.assert_allclose(average.shadow[0].numpy(), start + 9 / 11, rtol=1e-5)
    for _ in range(200):
        update()  # decay reaches 0.9; the average converges on the held weights
    np.testing.assert_allclose(average.shadow[0].numpy(), start + 1.0, atol=1e-4)
    kernel.assign(start + 5.0)
    with average.applied():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), start + 1.0, atol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), start + 5.0)
    with pytest.raises(ValueError, match="momentum must be in"):
        WeightAverage(model.trainable_variables, 1.0)


def test_classifier_crop_jitter_spreads_as_measured():
    """'uniform' keeps the shipped models' window (size +-15 %, centre +-8 %); 'detector'
    strays like the detector's boxes were measured to (Gaussian sds, clipped at 2.5 sd); an
    unknown jitter is refused before any training."""
    needs_tensorflow()
    from convert.classifier import DETECTOR_JITTER_SD, jitter_window, train
    rng = np.random.default_rng(0)
    u = np.array([jitter_window(rng, "uniform") for _ in range(4000)])
    assert 0.85 <= u[:, 0].min() and u[:, 0].max() <= 1.15
    assert np.abs(u[:, 1:]).max() <= 0.08
    d = np.array([jitter_window(rng, "detector") for _ in range(4000)])
    spread = np.array([np.log(d[:, 0]).std(), d[:, 1].std(), d[:, 2].std()])
    assert np.allclose(spread, DETECTOR_JITTER_SD, rtol=0.08)
    assert np.abs(np.log(d[:, 0])).max() <= 2.5 * DETECTOR_JITTER_SD[0] + 1e-9
    with pytest.raises(ValueError, match="jitter 'wide': use one of uniform, detector"):
        train(None, None, None, jitter="wide")


def test_classifier_crops_can_be_cut_around_the_detectors_boxes(tmp_path):
    """`classifier-train --boxes-from verified`: the same faces with the same labels, each
    crop cut around the detector's box where one matches the face; a crop cache remembers
    which boxes cut it and refuses to serve another choice."""
    needs_tensorflow()
    import shutil
    from conftest import FIXTURES
    from convert.classifier import build_crops, load_crop_cache
    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "andrewmvd", data / "detect" / "andrewmvd")
    images = sorted((data / "detect" / "andrewmvd" / "images").iterdir())
    rows = [f"detect/andrewmvd/images/{p.name},{'val' if i == 0 else 'train'}"
            for i, p in enumerate(images)]
    (data / "splits.csv").write_text("image,split\n" + "\n".join(rows) + "\n")
    plain = build_crops(data, "train", include_classify=False)
    cut = build_crops(data, "train", include_classify=False, boxes_from="verified")
    assert len(cut.labels) == len(plain.labels) >= 3
    assert (cut.labels == plain.labels).all() and np.array_equal(cut.width, plain.width)
    moved = [not np.array_equal(a, b) for a, b in zip(plain.images, cut.images)]
    assert sum(moved) >= len(moved) // 2      # the detector finds most fixture faces
    cache = tmp_path / "crops.npz"
    tr, _ = load_crop_cache(data, cache, "verified")
    assert np.array_equal(tr.images[:len(cut.labels)], cut.images[:len(cut.labels)])
    assert load_crop_cache(data, cache)[0].images.shape == tr.images.shape   # as it is
    with pytest.raises(ValueError, match="cut around verified's boxes, not annotation's; delete"):
        load_crop_cache(data, cache, "annotation")
