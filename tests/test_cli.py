"""``maskdoor detect`` and ``maskdoor eval`` as a user runs them."""

import json
import shutil
import subprocess
import sys

import cv2
import pytest

from conftest import FIXTURES, FIXTURE_IMAGES
from edge.cli import main


def test_detect_json_contract(capsys):
    assert main(["detect", "--json", str(FIXTURE_IMAGES[1]), str(FIXTURE_IMAGES[2])]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, path in zip(lines, FIXTURE_IMAGES[1:3]):
        rec = json.loads(line)
        assert rec["image"] == str(path)
        image = cv2.imread(str(path))
        assert (rec["height"], rec["width"]) == image.shape[:2]
        assert rec["ms"] > 0
        assert rec["faces"], "each of these fixtures shows a face"
        for face in rec["faces"]:
            assert set(face) == {"box", "score", "label", "label_score", "probs"}
            assert set(face["probs"]) == {"with_mask", "without_mask", "incorrect_mask"}
            assert face["label"] in face["probs"]
            assert face["label_score"] == face["probs"][face["label"]]
            x1, y1, x2, y2 = face["box"]
            assert 0 <= x1 < x2 <= rec["width"] and 0 <= y1 < y2 <= rec["height"]


def test_detect_faces_only_without_classifier(capsys):
    assert main(["detect", "--json", "--classifier", "none", str(FIXTURE_IMAGES[1])]) == 0
    (face,) = json.loads(capsys.readouterr().out)["faces"]
    assert set(face) == {"box", "score"}


def test_detect_with_the_accurate_detector(capsys):
    assert main(["detect", "--json", "--model", "accurate", str(FIXTURE_IMAGES[1])]) == 0
    (face,) = json.loads(capsys.readouterr().out)["faces"]
    assert face["label"] in face["probs"]


def test_eval_names_the_multi_pass_detector(capsys):
    assert main(["eval", str(FIXTURES / "andrewmvd"), "--split", "all", "--json",
                 "--peers", "none", "--classifier", "none", "--model", "accurate"]) == 0
    (name, row), = json.loads(capsys.readouterr().out)["detectors"].items()
    assert "4 passes" in name and row["recall"][">=40"] == 1.0


def test_bad_files_are_named_others_still_processed(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(FIXTURE_IMAGES[1], folder / "good.jpg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    code = main(["detect", "--json", str(folder), str(notes), str(tmp_path / "missing.png")])
    out, err = capsys.readouterr()
    assert code == 1
    assert [json.loads(l)["image"] for l in out.strip().splitlines()] == [str(folder / "good.jpg")]
    assert "corrupt.jpg: not a readable image" in err
    assert "notes.txt: not a readable image" in err
    assert "missing.png: no such file" in err
    assert "3 file(s) or folder(s) failed (named above)" in err


def test_out_writes_annotated_copies(tmp_path, capsys):
    out = tmp_path / "annotated"
    assert main(["detect", str(FIXTURE_IMAGES[1]), "--out", str(out)]) == 0
    written = cv2.imread(str(out / FIXTURE_IMAGES[1].name))
    original = cv2.imread(str(FIXTURE_IMAGES[1]))
    assert written.shape == original.shape
    assert (cv2.absdiff(written, original) > 40).any(), "boxes should be drawn"
    assert "1 face" in capsys.readouterr().out


def test_missing_model_exits_2_with_the_path(tmp_path, capsys):
    code = main(["detect", str(FIXTURE_IMAGES[0]), "--model", str(tmp_path / "x.tflite")])
    assert code == 2
    assert "model file not found" in capsys.readouterr().err


def test_eval_on_annotated_folder(capsys):
    assert main(["eval", str(FIXTURES / "andrewmvd"), "--split", "all", "--json",
                 "--peers", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["detectors"].values()
    assert report["images"] == len(FIXTURE_IMAGES)
    assert row["faces"] == row["faces_by_width"]["all"] > 0
    assert row["recall"][">=40"] == 1.0
    assert 0 < row["ap"] <= 1


def test_eval_side_by_side_with_opencv_res10(shared_weights, capsys):
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("OpenCV 5 has no Caffe importer")
    assert main(["eval", str(FIXTURES / "andrewmvd"), "--split", "all",
                 "--peers", str(shared_weights)]) == 0
    out = capsys.readouterr().out
    assert "maskdoor int8 448x448 (" in out and "opencv res10 (float)" in out


def test_console_script_is_installed():
    exe = shutil.which("maskdoor") or str(__import__("pathlib").Path(sys.executable).parent / "maskdoor")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("maskdoor ")
