import importlib.util
import subprocess
import sys
from pathlib import Path

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
    monkeypatch.setattr(tflite, "RUNTIMES", (tflite.Runtime("litert", "no_such_runtime.interpreter",
                                                            "no-such-runtime", "`pip install x`"),))
    with pytest.raises(RuntimeMissingError, match="pip install ai-edge-litert"):
        tflite.Model(FACE_DETECTOR)


def test_auto_picks_litert_first():
    assert tflite.runtime_name() == tflite.runtime_name("auto") == "ai_edge_litert.interpreter"
    m = tflite.Model(FACE_DETECTOR, runtime="auto")
    assert m.runtime == tflite.Model(FACE_DETECTOR, runtime="litert").runtime == "ai_edge_litert"
    assert tflite.runtime_version(m.runtime).startswith("ai_edge_litert ")
    assert tflite.runtime_version(m.runtime).split()[1][0].isdigit()


@pytest.mark.skipif(importlib.util.find_spec("tflite_runtime") is not None,
                    reason="tflite-runtime is installed here")
def test_missing_chosen_runtime_names_the_key_and_the_install():
    with pytest.raises(RuntimeMissingError, match=r"detector.runtime = 'tflite-runtime'.*"
                       r"pip install '\.\[tflite-runtime\]'"):
        tflite.Model(FACE_DETECTOR, runtime="tflite-runtime")


@pytest.mark.skipif(importlib.util.find_spec("tflite_runtime") is not None,
                    reason="tflite-runtime is installed here")
@pytest.mark.parametrize("command", ["run", "check"])
def test_runtime_switch_without_that_runtime_is_one_clear_error(command):
    maskdoor = Path(sys.executable).parent / "maskdoor"
    out = subprocess.run([str(maskdoor), command, "--source", "demo", "--runtime",
                          "tflite-runtime"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if "detector.runtime = 'tflite-runtime'" in ln]
    assert len(lines) == 1 and "pip install '.[tflite-runtime]'" in lines[0]


def test_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="litert, tflite-runtime"):
        tflite.Model(FACE_DETECTOR, runtime="tflite")


def test_errors_are_also_builtin_types():
    assert issubclass(ModelError, ValueError) and issubclass(ModelError, MaskdoorError)
    assert issubclass(RuntimeMissingError, ImportError)


def test_the_config_and_the_command_line_offer_the_runtimes_the_loader_knows():
    from edge import config
    from edge.cli import build_parser
    from edge.inference.tflite import RUNTIME_CHOICES
    assert config.SCHEMA["detector"].fields["runtime"].choices == RUNTIME_CHOICES
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    assert next(a for a in run._actions if a.dest == "runtime").choices == RUNTIME_CHOICES
