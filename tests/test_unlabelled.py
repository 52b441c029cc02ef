"""Audited unlabelled faces: the csv that ``maskdoor eval --unlabelled`` reads."""
import json
import shutil

import pytest

from edge.cli import main
from convert.measure.dataset import add_unlabelled, load_voc_dataset
from edge.errors import DatasetError
from conftest import FIXTURES, ROOT

SHIPPED = ROOT / "models" / "unlabelled_faces.csv"


def _dataset(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(FIXTURES / "andrewmvd", root / "detect" / "andrewmvd")
    return root, load_voc_dataset(root / "detect")


def test_rows_attach_to_the_image_they_name(tmp_path):
    root, samples = _dataset(tmp_path)
    name = samples[1].image.name
    csv = root / "faces.csv"
    csv.write_text("image,x1,y1,x2,y2,split\n"
                   f"detect/andrewmvd/images/{name},10,20,60,80,val\n"
                   f"detect/andrewmvd/images/{name},100,20,160,80,val\n"
                   "detect/andrewmvd/images/not_in_this_set.jpg,1,1,50,50,test\n")
    out, used = add_unlabelled(samples, csv)
    assert used == 2
    assert out[1].unlabelled_boxes.tolist() == [[10, 20, 60, 80], [100, 20, 160, 80]]
    assert all(len(s.unlabelled) == 0 for i, s in enumerate(out) if i != 1)
    assert [s.objects for s in out] == [s.objects for s in samples]


@pytest.mark.parametrize("text, message", [
    ("image,x1,y1,x2\na.jpg,1,2,3\n", "missing y2"),
    ("image,x1,y1,x2,y2\na.jpg,1,2,three,4\n", "line 2: x1, y1, x2, y2 must be numbers"),
    ("image,x1,y1,x2,y2\na.jpg,1,2,3,4\na.jpg,5,5,5,9\n", "line 3: empty box"),
])
def test_a_bad_csv_names_the_file_the_line_and_the_fix(tmp_path, text, message):
    _, samples = _dataset(tmp_path)
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    with pytest.raises(DatasetError, match=message) as err:
        add_unlabelled(samples, csv)
    assert str(csv) in str(err.value)


def test_a_missing_csv_is_a_clear_error(tmp_path):
    _, samples = _dataset(tmp_path)
    with pytest.raises(DatasetError, match="unlabelled-faces file not found"):
        add_unlabelled(samples, tmp_path / "nope.csv")


def test_eval_reports_plain_and_audited_precision(tmp_path, capsys):
    """An unlabelled box where the detector finds nothing changes nothing; the report says how
    many audited faces applied."""
    root, samples = _dataset(tmp_path)
    csv = root / "faces.csv"
    csv.write_text(f"image,x1,y1,x2,y2\ndetect/andrewmvd/images/{samples[0].image.name},0,0,5,5\n")
    assert main(["eval", str(root / "detect"), "--split", "all", "--json", "--peers", "none",
                 "--classifier", "none", "--unlabelled", str(csv)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unlabelled"] == {"file": str(csv), "faces": 1}
    (row,) = report["detectors"].values()
    assert row["audited"]["detections_on_them"] == 0
    assert row["audited"]["precision_>=40"] == row["precision_>=40"]


def test_shipped_audit_file_is_valid_and_names_val_and_test_images():
    import csv
    rows = list(csv.DictReader(SHIPPED.open()))
    assert rows and {r["split"] for r in rows} == {"val", "test"}
    assert all(r["image"].startswith("detect/") for r in rows)
    assert all(float(r["x2"]) > float(r["x1"]) and float(r["y2"]) > float(r["y1"]) for r in rows)
