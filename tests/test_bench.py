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
