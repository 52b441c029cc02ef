"""Quantisation-aware fine-tuning: train a Keras model while it sees the int8 rounding that
the TFLite converter will apply, so the exported int8 model keeps more of the float accuracy.

TensorFlow Model Optimization's QAT works on tf_keras models only, so this is written for the
Keras 3 functional models built here. :func:`fake_quant_model` re-runs the model's graph with
the same layers (shared weights) and adds what full-integer quantisation does:

- **weights**: each convolution's kernel rounded to int8, symmetric, one scale per output
  channel (``[-127, 127]``), as the converter quantises them. The converter first folds a
  following BatchNormalization into the kernel, but per-channel symmetric rounding commutes with
  a per-channel scale, so rounding the unfolded kernel gives the same numbers.
- **activations**: every tensor the converter stores in int8 (one ``[lo, hi]`` range per
  tensor, 256 steps): the output of every layer except those fused into the next op (a
  convolution followed by BatchNormalization, or anything followed by a ReLU). The ranges are
  the min and max over calibration images (:func:`calibrate`), which is how the
  converter picks them from the representative set; they stay fixed between calibrations.

Rounding passes gradients straight through inside the range (``tf.quantization.fake_quant_*``).
The trained weights are the float model's own, so export is unchanged: quantise the float
model with the same representative images. The graph walk uses Keras 3's functional internals
(``_run_through_graph``, ``_nodes_by_depth``); ``tests/test_qat.py`` fails if they change."""

from __future__ import annotations

import contextlib
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

CONVOLUTIONS = (layers.Conv2D, layers.DepthwiseConv2D)


class ActivationQuant(layers.Layer):
    """Rounds a tensor to int8 over a fixed range [lo, hi] (0 always inside it, as the
    converter's asymmetric int8 has it). While ``calibrating`` it passes the tensor through
    and widens the range to cover it instead."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calibrating = False
        self.lo = self.add_weight(shape=(), initializer="zeros", trainable=False, name="lo")
        self.hi = self.add_weight(shape=(), initializer="zeros", trainable=False, name="hi")

    def call(self, x):
        if self.calibrating:
            self.lo.assign(tf.minimum(self.lo, tf.reduce_min(x)))
            self.hi.assign(tf.maximum(self.hi, tf.reduce_max(x)))
            return x
        return tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=8,
                                                            narrow_range=False)


def quantised_kernel(kernel, depthwise: bool):
    """``kernel`` rounded to int8 per output channel, symmetric (scale max|w| / 127)."""
    shape = tf.shape(kernel)
    flat = tf.reshape(kernel, (-1, shape[2] * shape[3])) if depthwise else \
        tf.reshape(kernel, (-1, shape[3]))
    bound = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(flat), axis=0), 1e-8))
    rounded = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        flat, -bound, bound, num_bits=8, narrow_range=True)
    return tf.reshape(rounded, shape)


class WeightQuant(layers.Layer):
    """``inner`` (a Conv2D or DepthwiseConv2D, whose variables it shares) with its kernel
    rounded by :func:`quantised_kernel`; ``calibrating`` turns the rounding off."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.calibrating = False

    def call(self, x):
        inner = self.inner
        depthwise = isinstance(inner, layers.DepthwiseConv2D)
        kernel = inner.kernel if self.calibrating else quantised_kernel(inner.kernel, depthwise)
        if depthwise:
            y = keras.ops.depthwise_conv(x, kernel, strides=inner.strides, padding=inner.padding,
                                         dilation_rate=inner.dilation_rate,
                                         data_format=inner.data_format)
        else:
            y = inner.convolution_op(x, kernel)
        if inner.use_bias:
            y = y + inner.bias
        return inner.activation(y) if inner.activation is not None else y


def consumers(model: keras.Model) -> dict[int, list]:
    """id(layer) -> the operations that read its output, within ``model``'s own graph (a layer
    called again elsewhere, e.g. by an earlier :func:`fake_quant_model`, does not count)."""
    readers: dict[int, list] = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for x in node.input_tensors:
                readers.setdefault(id(x._keras_history[0]), []).append(node.operation)
    return readers


def stored_in_int8(layer, readers: list) -> bool:
    """Whether the converter keeps ``layer``'s output as an int8 tensor: not when it is fused
    into its only reader (a convolution into BatchNormalization, anything into a ReLU)."""
    if len(readers) != 1:
        return True
    if isinstance(readers[0], (layers.ReLU, layers.Activation)):
        return False
    return not (isinstance(readers[0], layers.BatchNormalization)
                and isinstance(layer, CONVOLUTIONS))


def fake_quant_model(model: keras.Model, input_hw=(None, None)) -> keras.Model:
    """``model`` (functional, one image input) with int8 rounding of weights and activations;
    it shares ``model``'s variables, so training it trains ``model``."""
    wrapped, quant = {}, {}
    readers = consumers(model)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, CONVOLUTIONS):
            wrapped[id(layer)] = WeightQuant(layer, name=f"{layer.name}_wq")
        if stored_in_int8(layer, readers.get(id(layer), [])):
            quant[id(layer)] = ActivationQuant(name=f"{layer.name}_aq")

    def operation_fn(op):
        inner = wrapped.get(id(op), op)
        after = quant.get(id(op))

        def call(*args, **kwargs):
            out = inner(*args, **kwargs)
            return after(out) if after is not None else out
        return call

    inp = keras.Input((*input_hw, model.inputs[0].shape[-1]), name=model.inputs[0].name)
    outputs = model._run_through_graph([inp], operation_fn=operation_fn)
    qmodel = keras.Model(inp, outputs, name=f"{model.name}_int8sim")
    qmodel.quant_layers = list(wrapped.values()) + list(quant.values())
    qmodel.activation_quants = list(quant.values())
    return qmodel


@contextlib.contextmanager
def calibrating(qmodel):
    for layer in qmodel.quant_layers:
        layer.calibrating = True
    try:
        yield
    finally:
        for layer in qmodel.quant_layers:
            layer.calibrating = False


def calibrate(qmodel, images, batch_size: int = 8) -> None:
    """Set every activation range to the min and max over ``images`` (float weights, like the
    converter's calibration); the images must all have one size."""
    for q in qmodel.activation_quants:
        q.lo.assign(0.0)
        q.hi.assign(0.0)
    with calibrating(qmodel):
        for i in range(0, len(images), batch_size):
            qmodel(np.stack(images[i:i + batch_size]).astype(np.float32), training=False)
