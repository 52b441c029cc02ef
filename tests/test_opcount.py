"""Operation counts read from the shipped models (the basis of the Pi and Coral estimates)."""

import pytest

from convert.measure.opcount import REFERENCE_MACS, estimates, op_counts
from models import FACE_DETECTOR, FACE_DETECTOR_DOOR, MASK_CLASSIFIER


def test_macs_follow_the_input_area():
    door, ops = op_counts(FACE_DETECTOR_DOOR)
    full, _ = op_counts(FACE_DETECTOR)
    assert full / door == pytest.approx((448 / 256) ** 2, rel=0.02)
    assert ops["CONV_2D"] > 20


def test_detector_graph_has_only_static_shapes():
    """No SHAPE or SPACE_TO_BATCH_ND: the Edge TPU compiler maps neither, and on the CPU
    they are work for nothing."""
    for path in (FACE_DETECTOR, FACE_DETECTOR_DOOR):
        _, ops = op_counts(path)
        assert not {"SHAPE", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"} & set(ops), ops


def test_classifier_is_a_mobilenetv2_at_96px():
    macs, ops = op_counts(MASK_CLASSIFIER)
    # MobileNetV2 1.0 costs 300 M MACs at 224 px; at 96 px about (96/224)^2 of that
    assert macs == pytest.approx(REFERENCE_MACS * (96 / 224) ** 2, rel=0.25)
    assert ops["DEPTHWISE_CONV_2D"] == 17


def test_estimates_scale_with_macs():
    one, two = estimates(REFERENCE_MACS), estimates(2 * REFERENCE_MACS)
    for device in one:
        assert two[device] == pytest.approx(2 * one[device], abs=0.2)
