"""``maskdoor detect`` and ``maskdoor eval`` as a user runs them."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

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


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header that declares ``width`` x ``height`` pixels, with almost no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    import struct

    import numpy as np
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_odd_images_are_named_and_the_rest_still_processed(tmp_path):
    import numpy as np
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    (folder / "x.jpg").mkdir()  # a folder with an image's name, holding nothing
    (tmp_path / "empty").mkdir()
    original = cv2.imread(str(FIXTURE_IMAGES[1]))
    good = {"good.jpg": original.shape[:2], "one.png": (1, 1), "deep16.png": original.shape[:2],
            "grey.png": original.shape[:2], "alpha.png": original.shape[:2]}
    shutil.copy(FIXTURE_IMAGES[1], folder / "good.jpg")
    cv2.imwrite(str(folder / "one.png"), np.full((1, 1, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "deep16.png"), original.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "grey.png"), cv2.cvtColor(original, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "alpha.png"), cv2.cvtColor(original, cv2.COLOR_BGR2BGRA))
    assert cv2.imread(str(folder / "deep16.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    jpeg = FIXTURE_IMAGES[1].read_bytes()
    bad = {"huge.png": (png_declaring(100_000, 100_000), "declares more pixels than can be "
                        "decoded"),
           "huge.jpg": (jpeg_declaring(60_000, 60_000), "declares more pixels than can be "
                        "decoded"),
           "zero.jpg": (b"", "empty file (0 bytes)"),
           "truncated.jpg": (jpeg[:len(jpeg) // 2], "not a readable image")}
    for name, (data, _) in bad.items():
        (folder / name).write_bytes(data)
    exe = str(Path(sys.executable).parent / "maskdoor")
    r = subprocess.run([exe, "detect", "--json", "--model", "door", "--classifier", "single",
                        str(folder), str(folder / "x.jpg"), str(tmp_path / "empty"),
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    seen = {json.loads(line)["image"]: json.loads(line) for line in r.stdout.splitlines()}
    assert set(seen) == {str(folder / name) for name in good}
    for name, (height, width) in good.items():
        rec = seen[str(folder / name)]
        assert (rec["height"], rec["width"]) == (height, width)
        assert cv2.imread(str(out / name)).shape[:2] == (height, width)
    assert seen[str(folder / "good.jpg")]["faces"] and not seen[str(folder / "one.png")]["faces"]
    for name, (_, reason) in bad.items():
        assert f"maskdoor detect: {folder / name}: {reason}" in r.stderr
    for empty in (folder / "x.jpg", tmp_path / "empty"):
        assert f"maskdoor detect: no images found in {empty} (looked for" in r.stderr
    assert "6 file(s) or folder(s) failed (named above)" in r.stderr


def test_an_empty_folder_is_an_error(tmp_path, capsys):
    assert main(["detect", "--model", "door", "--classifier", "none", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and f"no images found in {tmp_path}" in err


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_text("x"), "a file of that name is in the way; name a folder"),
    (lambda p: None, "the folder cannot be made (Not a directory); name a folder you can "
     "write to")])
def test_out_that_cannot_be_a_folder_is_one_clear_error(tmp_path, capsys, make, reason):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    out = tmp_path / "annotated"
    make(out)
    target = out if out.exists() else blocker / "sub"
    assert main(["detect", str(FIXTURE_IMAGES[1]), "--out", str(target)]) == 2
    assert capsys.readouterr().err == f"maskdoor detect: --out {target}: {reason}\n"
