"""End-to-end metrics on hand-made cases, and the ROC picture."""

import cv2
import numpy as np
import pytest

from convert.measure.dataset import Annotation, Sample
from convert.measure.pipeline_eval import PipelineRecords, crop_summary, roc, write_roc_png
from edge.types import Box, Face


def face(x, label, p):
    probs = {"with_mask": 0.0, "without_mask": 0.0, "incorrect_mask": 0.0}
    probs[label] = p
    rest = [k for k in probs if k != label]
    for k in rest:
        probs[k] = (1 - p) / 2
    return Face(Box(x, 0, x + 50, 60), 0.9, label, p, probs)


def sample(*objs):
    return Sample(None, 640, 480, tuple(Annotation(Box(x, 0, x + 50, 60), lab) for x, lab in objs))


def test_unmasked_recall_and_masked_false_alarm():
    r = PipelineRecords(threshold=0.5)
    s = sample((0, "without_mask"), (100, "with_mask"), (200, "with_mask"), (300, "incorrect_mask"))
    faces = [face(0, "without_mask", 0.9), face(100, "with_mask", 0.9),
             face(200, "without_mask", 0.6)]  # the face at 300 is missed
    r.add(s, faces, 10.0)
    out = r.summary()[">=40"]
    assert out["unmasked_recall"] == 0.5          # 1 of 2 not-properly-masked faces flagged
    assert out["masked_false_alarm"] == 0.5       # 1 of 2 masked faces flagged
    assert out["detector_recall"] == 0.75
    assert out["confusion"]["with_mask"]["without_mask"] == 1
    assert out["confusion"]["incorrect_mask"][None] == 1


def test_ap_uses_detector_times_class_probability():
    r = PipelineRecords(threshold=0.5)
    r.add(sample((0, "without_mask"), (100, "with_mask")),
          [face(0, "without_mask", 0.9), face(100, "with_mask", 0.9)], 1.0)
    s = r.summary()
    assert s["ap_unmasked_>=40"] == pytest.approx(1.0)
    assert s["ap_masked_>=40"] == pytest.approx(1.0)


def test_audited_ap_ignores_a_verdict_on_an_unlabelled_face():
    """A face the annotation lacks has no known mask state: flagging it is neither right nor
    wrong once audited; the plain AP counts it as a false alarm."""
    from dataclasses import replace
    r = PipelineRecords(threshold=0.5)
    s = replace(sample((0, "without_mask"), (100, "with_mask")), unlabelled=(Box(300, 0, 350, 60),))
    r.add(s, [face(0, "without_mask", 0.6), face(100, "with_mask", 0.9),
              face(300, "without_mask", 0.9)], 1.0)
    out = r.summary()
    assert out["ap_unmasked_>=40"] == pytest.approx(0.5)
    assert out["audited"]["ap_unmasked_>=40"] == pytest.approx(1.0)
    assert "audited" not in PipelineRecords(0.5).summary()


def test_crop_accuracy_and_roc(tmp_path):
    gts = np.array(["with_mask", "without_mask", "incorrect_mask", "with_mask"], dtype=object)
    preds = np.array(["with_mask", "without_mask", "without_mask", "without_mask"], dtype=object)
    c = crop_summary(gts, preds)
    assert c["accuracy_3class"] == 0.5 and c["accuracy_mask_vs_not"] == 0.75
    fpr, tpr, auc = roc(gts, np.array([0.1, 0.9, 0.8, 0.2]))
    assert auc == pytest.approx(1.0) and fpr[0] == 0 and tpr[-1] == 1
    path = tmp_path / "roc.png"
    write_roc_png({"ours": (fpr, tpr, auc)}, path)
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 200
