import numpy as np

from edge.inference import ssd


def spec():
    return ssd.AnchorSpec(input_size=(32, 48), feature_maps=(
        ssd.FeatureMapSpec(size=(4, 6), step=(8, 8), boxes=((8, 10), (12, 14))),
        ssd.FeatureMapSpec(size=(2, 3), step=(16, 16), boxes=((20, 24),)),
    ))


def test_prior_count_order_and_normalisation():
    s = spec()
    p = ssd.priors(s)
    assert p.shape == (s.count, 4) == (4 * 6 * 2 + 2 * 3, 4)
    # first location, both boxes, then the next column: Caffe's (row, col, box) order
    np.testing.assert_allclose(p[0], [4 / 48, 4 / 32, 8 / 48, 10 / 32])
    np.testing.assert_allclose(p[1], [4 / 48, 4 / 32, 12 / 48, 14 / 32])
    np.testing.assert_allclose(p[2, :2], [12 / 48, 4 / 32])
    np.testing.assert_allclose(p[48], [8 / 48, 8 / 32, 20 / 48, 24 / 32])


def test_encode_decode_roundtrip():
    s = spec()
    p = ssd.priors(s)
    rng = np.random.default_rng(0)
    boxes = np.sort(rng.uniform(0, 1, (len(p), 2, 2)), axis=1).transpose(0, 2, 1).reshape(-1, 4)
    boxes = boxes[:, [0, 2, 1, 3]]  # x1 y1 x2 y2 with x1<x2, y1<y2
    boxes[:, 2:] += 0.01
    loc = ssd.encode(boxes, p, s.variances)
    np.testing.assert_allclose(ssd.decode(loc, p, s.variances), boxes, atol=1e-5)


def test_spec_json_roundtrip():
    s = spec()
    assert ssd.AnchorSpec.from_dict(s.to_dict()) == s


def test_nms_keeps_best_of_overlapping_and_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    assert ssd.nms(boxes, scores, 0.45).tolist() == [1, 2]


def test_caffe_prior_box_order():
    boxes = ssd.caffe_prior_boxes(30, 60, [2], flip=True)
    np.testing.assert_allclose(boxes, [(30, 30), (42.4264, 42.4264), (42.4264, 21.2132),
                                       (21.2132, 42.4264)], rtol=1e-4)
