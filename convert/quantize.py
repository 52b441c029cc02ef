"""Full-integer quantisation of a Keras model to TFLite (uint8 image in, int8 out)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402


def _export_batch_of_one(model, folder: str) -> None:
    """SavedModel with a batch of exactly one: shapes are static, so the converter folds the
    shape arithmetic of reshapes and keeps dilated convolutions whole (the Edge TPU compiler
    maps neither SHAPE nor SPACE_TO_BATCH_ND, and the CPU saves the small ops too)."""
    spec = [tf.TensorSpec((1, *i.shape[1:]), tf.float32, name=i.name.split(":")[0])
            for i in model.inputs]
    model.export(folder, format="tf_saved_model", verbose=False, input_signature=spec)


def _export(model, folder: str, batch_of_one: bool) -> None:
    if batch_of_one:
        _export_batch_of_one(model, folder)
    else:  # the batch axis stays free: the device may classify several faces in one call
        model.export(folder, format="tf_saved_model", verbose=False)


def to_int8_tflite(model, representative: Callable[[], Iterable[np.ndarray]], out_path: str | Path,
                   input_type=tf.uint8, batch_of_one: bool = False) -> Path:
    """Quantise ``model`` with ``representative()`` samples (each one input, no batch axis).

    Weights and activations become int8; the input takes uint8 pixels so the device copies the
    resized image straight in, and outputs are int8 (dequantised by edge.inference.tflite.Model).
    """
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        _export(model, tmp, batch_of_one)
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


def to_float_tflite(model, out_path: str | Path, batch_of_one: bool = False) -> Path:
    """Float32 TFLite of ``model`` (for comparing int8 against float through one loader)."""
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        _export(model, tmp, batch_of_one)
        data = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(data)
    return out_path
