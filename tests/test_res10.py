"""The Keras rebuild of res10 must give OpenCV's own detections on real images."""

import numpy as np
import pytest

from conftest import FIXTURE_IMAGES, needs_tensorflow

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def rebuilt(shared_weights):
    needs_tensorflow()
    from convert.res10 import build_res10
    return build_res10(shared_weights / "deploy.prototxt",
                       shared_weights / "res10_300x300_ssd_iter_140000.caffemodel")


@pytest.fixture(scope="module")
def opencv_net(shared_weights):
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip("OpenCV without the Caffe importer (OpenCV 5); install opencv<5")
    return cv2.dnn.readNetFromCaffe(str(shared_weights / "deploy.prototxt"),
                                    str(shared_weights / "res10_300x300_ssd_iter_140000.caffemodel"))


def test_priors_match_opencv(rebuilt, opencv_net):
    from edge.inference import ssd
    _, spec, _ = rebuilt
    opencv_net.setInput(np.zeros((1, 3, 300, 300), np.float32))
    cv_priors = opencv_net.forward("mbox_priorbox")[0, 0].reshape(-1, 4)
    ours = ssd.priors(spec)
    corners = np.concatenate([ours[:, :2] - ours[:, 2:] / 2, ours[:, :2] + ours[:, 2:] / 2], 1)
    np.testing.assert_allclose(corners, cv_priors, atol=1e-5)


@pytest.mark.parametrize("path", FIXTURE_IMAGES, ids=lambda p: p.name)
def test_detections_match_opencv(rebuilt, opencv_net, path):
    from edge.inference.detectors.tflite_ssd import SSDDecoder, softmax_face
    model, spec, det = rebuilt
    image = cv2.imread(str(path))
    h, w = image.shape[:2]
    opencv_net.setInput(cv2.dnn.blobFromImage(image, 1.0, (300, 300), (104.0, 177.0, 123.0)))
    theirs = opencv_net.forward()[0, 0]
    theirs = theirs[theirs[:, 2] >= 0.1]
    out = model(cv2.resize(image, (300, 300))[None].astype(np.float32), training=False)
    decoder = SSDDecoder(spec, score_threshold=det["confidence_threshold"],
                         nms_iou=det["nms_threshold"], top_k=det["top_k"],
                         keep_top_k=det["keep_top_k"], clip=False)
    ours = decoder(out["loc"].numpy()[0], softmax_face(out["conf"].numpy()[0]), w, h)
    assert len(theirs) > 0, "fixture should give OpenCV at least one detection"
    for row in theirs:
        box = np.array(row[3:7]) * [w, h, w, h]
        best = max(ours, key=lambda f: _iou(f.box.as_list(4), box))
        assert _iou(best.box.as_list(4), box) >= 0.98
        assert abs(best.score - row[2]) <= 0.01


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union
