"""Full-integer quantisation of a Keras model to TFLite (uint8 image in, int8 out)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402


def to_int8_tflite(model, representative: Callable[[], Iterable[np.ndarray]], out_path: str | Path,
                   input_type=tf.uint8) -> Path:
    """Quantise ``model`` with ``representative()`` samples (each one input, no batch axis).

    Weights and activations become int8; the input takes uint8 pixels so the device copies the
    resized image straight in, and outputs are int8 (dequantised by edge.tflite.Model).
    """
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]

        def gen():
            for sample in representative():
                yield [np.asarray(sample, np.float32)[None]]

        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = input_type
        conv.inference_output_type = tf.int8
        data = conv.convert()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(data)
    return out_path


def to_float_tflite(model, out_path: str | Path) -> Path:
    """Float32 TFLite of ``model`` (for comparing int8 against float through one loader)."""
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        data = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(data)
    return out_path
