"""``maskdoor bench`` prints its rows (structure only: timings are never asserted)."""

import json

from edge.cli import main


def test_bench_json_rows(capsys, shared_weights):
    assert main(["bench", "--frames", "12", "--json", "--peers", str(shared_weights)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 12 and report["threads"] == 1
    names = list(report["rows"])
    assert any(n.startswith("maskdoor detector int8") for n in names)
    assert any(n.startswith("maskdoor classifier int8") for n in names)
    for row in report["rows"].values():
        assert row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"] and row["calls"] > 0
    assert set(report["stages_ms"]) >= {"preprocess", "detector", "postprocess",
                                        "tracker and policy"}
    for loop in report["loop"].values():
        assert loop["frames"] == 12 and loop["fps"] > 0
        assert set(loop["stage_ms"]) == {"capture", "detect", "classify", "track", "sinks"}
    assert set(report["empty_scene_15fps_percent_of_one_core"]) == {"motion gating on",
                                                                    "motion gating off"}
    process = report["process"]
    assert process["first_frame_after_start_s"] > 0 and process["peak_rss_mb"] > 10
    assert "aizoo ssd float" in report["peers_fps"]
    for name, ratio in report["ratio_vs_peers"].items():
        assert ratio == round(report["loop"]["1 thread"]["fps"] / report["peers_fps"][name], 2)
