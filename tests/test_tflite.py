import numpy as np
import pytest

from edge.inference import tflite
from edge.errors import MaskdoorError, ModelError, RuntimeMissingError
from models import FACE_DETECTOR


def test_reads_input_and_quantisation_from_the_model():
    m = tflite.Model(FACE_DETECTOR, threads=1)
    assert m.runtime in ("ai_edge_litert", "tflite_runtime")
    assert m.input.dtype is np.uint8 and m.input.shape[0] == 1 and m.input.shape[3] == 3
    assert m.input.quantized and m.input.scale == pytest.approx(1.0)
    assert all(o.dtype is np.int8 and o.quantized for o in m.outputs)
    outs = m(np.zeros(m.input.shape[1:], np.uint8))
    assert [o.dtype for o in outs] == [np.float32, np.float32]


def test_missing_model_names_the_path(tmp_path):
    with pytest.raises(ModelError, match="model file not found: .*nope.tflite"):
        tflite.Model(tmp_path / "nope.tflite")


def test_corrupt_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer")
    with pytest.raises(ModelError, match="bad.tflite: not a loadable TFLite model"):
        tflite.Model(bad)


# LiteRT's Delegate.__del__ fails on a delegate whose library never loaded; that is its noise.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_missing_edgetpu_library_names_it_and_the_fix():
    with pytest.raises(RuntimeMissingError, match=r"libedgetpu\.so\.1.*libedgetpu1-std"):
        tflite.Model(FACE_DETECTOR, edgetpu=True)


def test_unavailable_runtime_says_what_to_install(monkeypatch):
    monkeypatch.setattr(tflite, "RUNTIMES", ("no_such_runtime.interpreter",))
    with pytest.raises(RuntimeMissingError, match="pip install ai-edge-litert"):
        tflite.Model(FACE_DETECTOR)


def test_errors_are_also_builtin_types():
    assert issubclass(ModelError, ValueError) and issubclass(ModelError, MaskdoorError)
    assert issubclass(RuntimeMissingError, ImportError)
