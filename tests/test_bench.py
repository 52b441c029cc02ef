"""``maskdoor bench`` prints its rows (structure only: timings are never asserted)."""

import json

from edge.cli import main


def test_bench_json_rows(capsys, shared_weights):
    assert main(["bench", "--frames", "12", "--json", "--peers", str(shared_weights)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 12 and report["threads"] == 1
    names = list(report["rows"])
    assert any(n.startswith("maskdoor detector int8") for n in names)
    assert any(n.startswith("maskdoor classifier int8 96x96 (") for n in names)
    assert {"maskdoor classifier, 4 faces in one batch, per face",
            "maskdoor classifier, 4 faces one by one, per face",
            "maskdoor detector + classifier, frames with one face"} <= set(names)
    assert report["model"].endswith("face_detector_door.tflite"), "the appliance's detector"
    for row in report["rows"].values():
        assert row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"] and row["calls"] > 0
    assert set(report["stages_ms"]) >= {"preprocess", "detector", "postprocess",
                                        "tracker and policy"}
    assert "1 thread, detector every 2nd frame" in report["loop"]
    scripted = report["loop"]["scripted detector and classifier (all but the models)"]
    assert scripted["events"] == 1, "the scripted face is warned once, as a real one would be"
    est = report["estimates"]
    assert est["detector"]["mmacs"] > 5 * est["classifier per face"]["mmacs"] > 0
    assert report["classifier"].endswith("mask_classifier.tflite"), "the appliance's classifier"
    assert all(ms > 0 for e in est.values() for ms in e["estimated_ms"].values())
    for loop in report["loop"].values():
        assert loop["frames"] == 12 and loop["fps"] > 0
        assert set(loop["stage_ms"]) == {"capture", "detect", "classify", "track", "sinks"}
    assert set(report["empty_scene_15fps_percent_of_one_core"]) == {"motion gating on",
                                                                    "motion gating off"}
    view = report["live_view"]
    for mode in ("view off", "view on, idle", "view on, one viewer"):
        assert len(view[mode]["fps_each_round"]) == 5 and view[mode]["fps"] > 0
    assert view["view off"]["encoded_frames"] == view["view on, idle"]["encoded_frames"] == 0, \
        "nothing is encoded while nobody watches"
    assert view["view on, one viewer"]["encoded_frames"] > 0
    assert view["view on, one viewer"]["bytes_sent"] > 0
    assert view["idle / off"] == round(view["view on, idle"]["fps"] / view["view off"]["fps"], 3)
    process = report["process"]
    assert process["first_frame_after_start_s"] > 0 and process["peak_rss_mb"] > 10
    assert "aizoo ssd float" in report["peers_fps"]
    for name, ratio in report["ratio_vs_peers"].items():
        assert ratio == round(report["loop"]["1 thread"]["fps"] / report["peers_fps"][name], 2)


def test_stage_times_of_a_multi_pass_detector_time_it_whole():
    import cv2

    from conftest import FIXTURE_IMAGES
    from convert.measure.bench import _stage_times
    from edge.inference.classifier import MaskClassifier
    from edge.inference.detectors import load_detector
    from models import MASK_CLASSIFIER, detector_path
    frames = [cv2.imread(str(p)) for p in FIXTURE_IMAGES[:2]]
    stages = _stage_times(load_detector(detector_path("accurate")), MaskClassifier(MASK_CLASSIFIER),
                          frames)
    assert set(stages) == {"detector", "classifier per face", "tracker and policy"}
    assert all(v > 0 for v in stages.values())


def test_estimates_count_every_member_of_a_classifier_pair():
    from convert.measure.bench import _estimates
    from edge.inference.classifier import load_classifier
    from edge.inference.detectors import load_detector
    from models import detector_path
    det = load_detector(detector_path("door"))
    single = _estimates(det, load_classifier("single"))["classifier per face"]
    pair = _estimates(det, load_classifier("pair"))["classifier per face"]
    assert pair["model"] == "mask_classifier.tflite+mask_classifier_160.tflite"
    assert pair["mmacs"] > 3 * single["mmacs"] > 0
