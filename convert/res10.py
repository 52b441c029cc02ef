"""Rebuild OpenCV's res10 SSD face detector as a Keras model that carries the Caffe weights.

The builder walks ``deploy.prototxt`` layer by layer (Caffe's in-place layers reuse blob names,
so a blob name always means "the latest tensor written under that name") and stops at the SSD
heads, which it rebuilds in NHWC order: Caffe's Permute(0, 2, 3, 1) + Flatten is exactly the
row-major flattening of an NHWC tensor, so the output rows line up with Caffe's priors.

The Keras model takes BGR pixels 0..255 at a fixed size and returns
``loc`` (1, N, 4) box offsets and ``conf`` (1, N, 2) logits; softmax, decoding and NMS follow.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from keras import layers  # noqa: E402

from convert.caffe import parse_prototxt, read_caffemodel  # noqa: E402
from edge.inference.ssd import AnchorSpec, FeatureMapSpec, caffe_prior_boxes  # noqa: E402

BGR_MEAN = (104.0, 177.0, 123.0)  # what OpenCV's samples subtract before this network


@keras.saving.register_keras_serializable("maskdoor")
class ChannelL2Norm(layers.Layer):
    """Caffe's Normalize layer (across_spatial=false): x / ||x||_channels * scale[c]."""

    def __init__(self, eps: float = 1e-10, **kwargs):
        super().__init__(**kwargs)
        self.eps = eps

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(20.0))

    def call(self, x):
        ops = keras.ops
        return x * ops.rsqrt(ops.sum(x * x, axis=-1, keepdims=True) + self.eps) * self.scale

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


def _one(d: dict, key: str, default=None):
    return d.get(key, [default])[0]


def build_res10(prototxt: str | Path, caffemodel: str | Path,
                input_size: tuple[int, int] = (300, 300)) -> tuple[keras.Model, AnchorSpec, dict]:
    """Return (model, Caffe's own anchor spec at ``input_size``, detection_out params).

    ``input_size`` is (height, width); the Caffe priors' steps are kept as written in the
    prototxt, which is what OpenCV does, so boxes match OpenCV only at 300x300. With
    ``input_size=(None, None)`` the model takes any size that is a multiple of 32 and the
    returned spec is None.
    """
    net = parse_prototxt(Path(prototxt).read_text())
    weights = read_caffemodel(caffemodel)
    h, w = input_size
    inp = keras.Input((h, w, 3), name="image_bgr")
    blobs: dict[str, object] = {"data": layers.Rescaling(1.0, offset=[-m for m in BGR_MEAN],
                                                          name="bgr_mean")(inp)}
    bn_layers: dict[str, tuple[layers.BatchNormalization, list]] = {}  # blob -> (layer, arrays)
    assign: list[tuple[layers.Layer, list[np.ndarray]]] = []
    sources: list[tuple[str, dict]] = []  # (feature blob, prior params) in prototxt order
    heads: dict[str, object] = {}
    detection: dict = {}

    for L in net["layer"]:
        name, kind = _one(L, "name"), _one(L, "type")
        bottoms, top = L.get("bottom", []), _one(L, "top")
        x = blobs.get(bottoms[0]) if bottoms else None
        if kind == "Convolution":
            p = _one(L, "convolution_param")
            k, s, pad = _one(p, "kernel_size"), _one(p, "stride", 1), _one(p, "pad", 0)
            dil = _one(p, "dilation", 1)
            bias = _one(p, "bias_term", True)
            if pad:
                x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
            conv = layers.Conv2D(_one(p, "num_output"), k, strides=s, dilation_rate=dil,
                                 use_bias=bias, name=name)
            y = conv(x)
            wb = weights[name]
            arrays = [np.transpose(wb[0], (2, 3, 1, 0))] + ([wb[1]] if bias else [])
            assign.append((conv, arrays))
        elif kind == "BatchNorm":
            eps = _one(_one(L, "batch_norm_param", {}), "eps", 1e-5)
            mean, var, factor = weights[name]
            f = float(factor.ravel()[0]) or 1.0
            bn = layers.BatchNormalization(epsilon=eps, name=name)
            y = bn(x)
            c = mean.shape[0]
            bn_layers[top] = (bn, [np.ones(c, np.float32), np.zeros(c, np.float32), mean / f, var / f])
        elif kind == "Scale":
            gamma, beta = (weights[name] + [None])[:2]
            if bottoms[0] in bn_layers:  # BN followed by Scale = one Keras BatchNormalization
                arrays = bn_layers[bottoms[0]][1]
                arrays[0] = gamma
                if beta is not None:
                    arrays[1] = beta
                y = x
            else:
                raise NotImplementedError(f"{name}: Scale without a preceding BatchNorm")
        elif kind == "ReLU":
            y = layers.ReLU(name=name)(x)
        elif kind == "Pooling":
            p = _one(L, "pooling_param")
            k, s = _one(p, "kernel_size"), _one(p, "stride", 1)
            # Caffe rounds pooled sizes up; pad bottom/right so 'valid' pooling does the same.
            # With a dynamic input size, assume an even size (inputs are multiples of 32).
            pads = [max((math.ceil((n - k) / s)) * s + k - n, 0) if n is not None
                    else (s - (k % s)) % s for n in x.shape[1:3]]
            if any(pads):
                x = layers.ZeroPadding2D(((0, pads[0]), (0, pads[1])), name=f"{name}_pad")(x)
            y = layers.MaxPooling2D(k, s, padding="valid", name=name)(x)
        elif kind == "Eltwise":
            y = layers.Add(name=name)([blobs[b] for b in bottoms])
        elif kind == "Normalize":
            norm = ChannelL2Norm(name=name)
            y = norm(x)
            assign.append((norm, [weights[name][0].ravel()]))
        elif kind in ("Permute",):
            y = x
        elif kind == "Flatten":
            if name.endswith("_loc_flat"):
                heads.setdefault("loc", []).append(layers.Reshape((-1, 4), name=name)(x))
            elif name.endswith("_conf_flat"):
                heads.setdefault("conf", []).append(layers.Reshape((-1, 2), name=name)(x))
            y = x
        elif kind == "PriorBox":
            sources.append((bottoms[0], _one(L, "prior_box_param")))
            y = None
        elif kind == "DetectionOutput":
            dp = _one(L, "detection_output_param")
            nms_p = _one(dp, "nms_param", {})
            detection = {"nms_threshold": _one(nms_p, "nms_threshold", 0.45),
                         "top_k": _one(nms_p, "top_k", 400),
                         "keep_top_k": _one(dp, "keep_top_k", 200),
                         "confidence_threshold": _one(dp, "confidence_threshold", 0.01)}
            y = None
        elif kind in ("Concat", "Reshape", "Softmax"):
            y = None  # the heads are concatenated below
        else:
            raise NotImplementedError(f"{name}: Caffe layer type {kind} is not supported")
        if y is not None:
            blobs[top] = y

    loc = layers.Concatenate(axis=1, name="loc")(heads["loc"])
    conf = layers.Concatenate(axis=1, name="conf")(heads["conf"])
    model = keras.Model(inp, {"loc": loc, "conf": conf}, name="res10_ssd")
    for layer, arrays in assign:
        layer.set_weights(arrays)
    for bn, arrays in bn_layers.values():
        bn.set_weights(arrays)

    if h is None or w is None:
        return model, None, detection
    fmaps = []
    for blob, p in sources:
        fh, fw = blobs[blob].shape[1:3]
        step = float(_one(p, "step", 0) or 0)
        boxes = caffe_prior_boxes(_one(p, "min_size"), _one(p, "max_size"),
                                  p.get("aspect_ratio", []), _one(p, "flip", True))
        fmaps.append(FeatureMapSpec(size=(fh, fw),
                                    step=(step or h / fh, step or w / fw),
                                    boxes=boxes, offset=_one(p, "offset", 0.5)))
    variances = tuple(sources[0][1].get("variance", [0.1, 0.1, 0.2, 0.2]))
    spec = AnchorSpec(input_size=(h, w), feature_maps=tuple(fmaps), variances=variances)
    return model, spec, detection


def feature_blob_names() -> list[str]:
    """Names of the layers whose outputs feed the SSD heads, in head order."""
    return ["conv4_3_norm", "last_relu", "conv6_2_relu", "conv7_2_relu", "conv8_2_relu",
            "conv9_2_relu"]
