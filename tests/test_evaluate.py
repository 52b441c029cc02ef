import numpy as np
import pytest

from convert.measure.evaluate import DetectionRecords


def test_perfect_detections_give_full_recall_precision_and_ap():
    r = DetectionRecords()
    gt = np.array([[0, 0, 30, 30], [100, 100, 200, 200]])
    r.add(gt, gt, np.array([0.9, 0.8]))
    assert r.recall(0.5) == 1.0
    assert r.precision(0.5) == 1.0
    assert r.average_precision() == pytest.approx(1.0)
    assert r.recall(0.5, "<40") == 1.0 and r.recall(0.5, ">=40") == 1.0


def test_threshold_miss_and_false_positive():
    r = DetectionRecords()
    gt = np.array([[0, 0, 50, 50], [100, 100, 150, 150]])
    dets = np.array([[0, 0, 50, 50], [100, 100, 150, 150], [300, 300, 360, 360]])
    r.add(gt, dets, np.array([0.9, 0.4, 0.6]))
    assert r.recall(0.5) == 0.5          # second face only at 0.4
    assert r.recall(0.3) == 1.0
    assert r.precision(0.5) == 0.5       # one true, one false above 0.5
    assert r.precision(0.3) == pytest.approx(2 / 3)


def test_width_ranges_ignore_other_sizes_coco_style():
    r = DetectionRecords()
    gt = np.array([[0, 0, 20, 20], [100, 100, 180, 180]])       # 20 px and 80 px wide
    dets = np.array([[0, 0, 20, 20], [100, 100, 180, 180], [300, 300, 310, 310]])
    r.add(gt, dets, np.array([0.9, 0.9, 0.9]))
    assert r.count(">=40") == 1 and r.count("<40") == 1
    assert r.precision(0.5, ">=40") == 1.0      # the 10 px false positive is out of range
    assert r.precision(0.5, "<40") == 0.5
    assert r.precision(0.5) == pytest.approx(2 / 3)


def test_one_detection_matches_one_face_only():
    r = DetectionRecords()
    gt = np.array([[0, 0, 50, 50], [2, 2, 52, 52]])
    r.add(gt, np.array([[1, 1, 51, 51]]), np.array([0.9]))
    assert r.recall(0.1) == 0.5


def test_threshold_for_precision_finds_the_cut():
    r = DetectionRecords()
    gt = np.array([[0, 0, 50, 50], [100, 0, 150, 50]])
    dets = np.array([[0, 0, 50, 50], [300, 0, 350, 50], [100, 0, 150, 50]])
    r.add(gt, dets, np.array([0.9, 0.8, 0.7]))
    assert r.threshold_for_precision(1.0) == pytest.approx(0.9)
    assert r.threshold_for_precision(0.6) == pytest.approx(0.7)


def test_threshold_for_precision_keeps_groups_of_equal_scores_whole():
    """int8 detectors give many equal scores; a cut inside such a group is not a threshold."""
    r = DetectionRecords()
    gt = np.array([[0, 0, 50, 50], [100, 0, 150, 50], [200, 0, 250, 50]])
    dets = np.array([[0, 0, 50, 50], [100, 0, 150, 50], [400, 0, 450, 50], [200, 0, 250, 50]])
    r.add(gt, dets, np.array([0.9, 0.8, 0.8, 0.7]))
    # ranked: tp 0.9, tp 0.8, fp 0.8, tp 0.7 -> the cut after the first 0.8 (precision 1.0) is
    # not a threshold; 0.8 keeps both and gives 2/3
    t = r.threshold_for_precision(0.9)
    assert t == pytest.approx(0.9)
    assert r.precision(t) >= 0.9
    assert r.threshold_for_precision(0.75) == pytest.approx(0.7)


def test_audited_precision_ignores_detections_on_unlabelled_faces_only():
    """A detection on a face the annotation lacks is neither true nor false positive once
    audited (VOC 'difficult'); plain precision and recall do not change."""
    r = DetectionRecords()
    gt = np.array([[0, 0, 50, 50]])
    unlabelled = np.array([[200, 0, 260, 60]])
    dets = np.array([[0, 0, 50, 50], [202, 2, 258, 60], [400, 0, 460, 60]])
    r.add(gt, dets, np.array([0.9, 0.8, 0.7]), unlabelled=unlabelled)
    assert r.precision(0.5, ">=40") == pytest.approx(1 / 3)
    assert r.precision(0.5, ">=40", audited=True) == pytest.approx(1 / 2)
    assert r.precision(0.75, ">=40", audited=True) == 1.0
    assert r.recall(0.5, ">=40") == 1.0 and r.count() == 1
    assert r.average_precision(">=40", audited=True) == pytest.approx(1.0)
    s = r.summary(0.5)
    assert s["precision_>=40"] == pytest.approx(0.3333, abs=1e-4)
    assert s["audited"] == {"unlabelled_faces": 1, "detections_on_them": 1,
                            "precision_>=40": 0.5, "ap_>=40": 1.0}


def test_a_labelled_face_wins_over_an_unlabelled_box_it_overlaps():
    r = DetectionRecords()
    box = np.array([[0, 0, 50, 50]])
    r.add(box, box, np.array([0.9]), unlabelled=box)
    assert r.det_unlabelled == [False] and r.precision(0.5) == 1.0


def test_no_audit_means_no_audited_figures():
    r = DetectionRecords()
    r.add(np.array([[0, 0, 50, 50]]), np.array([[0, 0, 50, 50]]), np.array([0.9]))
    assert "audited" not in r.summary(0.5)
