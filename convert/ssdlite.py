"""SSDLite on the MobileNetV2 backbone: the alternative to res10 that the detector issue names.

The backbone is Keras's MobileNetV2 (width 1.0) with the ImageNet weights in ``shared/weights``;
SSD heads read five feature maps, at strides 8 (``block_6_expand_relu``), 16
(``block_13_expand_relu``), 32 (``out_relu``) and two extra stride-2 blocks (64, 128), each head a
depthwise 3x3 + pointwise convolution (SSDLite). The new layers have biases and no
BatchNormalization: training batches are small, so the backbone's statistics stay frozen too.
Like the res10 model it takes BGR pixels 0..255 (the scaling to [-1, 1] is a layer and the
BGR->RGB swap is folded into the first convolution) and returns ``loc`` (1, N, 4) and ``conf``
(1, N, 2), so training, export and the device's decoder are the same as for res10; only the
anchor spec differs (:func:`anchor_spec`).

``fpn=True`` adds a light top-down path (as in FPN): the stride-32 bottleneck
(``block_16_project_BN``, 320 channels) and then the enriched stride-16 map each pass through a
1x1 convolution, are upsampled x2, added to the next finer tap and clipped to [0, 6] like that
tap, so the stride-8 and stride-16 heads, which find the small faces, also see deeper features.
Those 1x1 convolutions start at zero: an FPN model warm-started from a plain SSDLite run gives
exactly that run's output at step 0.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from edge.ssd import AnchorSpec, FeatureMapSpec  # noqa: E402

BACKBONE_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
TAPS = ("block_6_expand_relu", "block_13_expand_relu", "out_relu")  # strides 8, 16, 32
EXTRA_CHANNELS = (256, 128)  # the stride-64 and stride-128 blocks
FPN_SOURCE = "block_16_project_BN"  # stride 32, 320 channels: the top-down path's start
STEM = ("Conv1", "bn_Conv1", "Conv1_relu", "expanded_conv_", "block_1_", "block_2_")  # stride <= 4
# Face widths (px at the model input) of the priors of each head; height = 1.2 x width.
PRIOR_WIDTHS = (
    (8, 11, 15, 20),                    # stride 8
    (26, 32, 38, 45, 53, 62),           # stride 16
    (72, 84, 98, 114, 132, 152),        # stride 32
    (172, 196, 222, 250, 280),          # stride 64
    (312, 350, 400),                    # stride 128
)
FACE_ASPECT = 1.2
PRIOR_FACE = 0.01  # initial face probability of every prior (stable start of training)


def feature_sizes(hw: tuple[int, int]) -> list[tuple[int, int]]:
    """(rows, cols) of each head's feature map at input ``hw``: every stride-2 layer of the
    backbone (zero padding + valid convolution) and of the extra blocks ('same') gives
    ceil(n / 2)."""
    h, w = hw
    sizes = []
    for halvings in range(1, len(PRIOR_WIDTHS) + 3):  # strides 2, 4, .., 128
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        if halvings >= 3:  # stride 8 and beyond: the heads
            sizes.append((h, w))
    return sizes


def anchor_spec(hw: tuple[int, int]) -> AnchorSpec:
    h, w = hw
    fms = tuple(FeatureMapSpec(size=size, step=(h / size[0], w / size[1]),
                               boxes=tuple((float(b), float(b * FACE_ASPECT)) for b in widths))
                for size, widths in zip(feature_sizes(hw), PRIOR_WIDTHS))
    return AnchorSpec(input_size=(h, w), feature_maps=fms)


def _head(x, boxes: int, depth: int, name: str):
    x = layers.DepthwiseConv2D(3, padding="same", name=f"{name}_dw")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(boxes * depth, 1, name=f"{name}_pw")(x)
    return layers.Reshape((-1, depth), name=f"{name}_flat")(x)


def _extra(x, channels: int, name: str):
    x = layers.Conv2D(channels // 2, 1, name=f"{name}_in")(x)
    x = layers.ReLU(6.0, name=f"{name}_in_relu")(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", name=f"{name}_dw")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(channels, 1, name=f"{name}_out")(x)
    return layers.ReLU(6.0, name=f"{name}_out_relu")(x)


class Upsample2x(layers.Layer):
    """Nearest-neighbour x2 upsampling that converts to one RESIZE_NEAREST_NEIGHBOR (version 1,
    on the Edge TPU's list) instead of the RESHAPE + TILE pairs of ``UpSampling2D``; same values."""

    def call(self, x):
        h, w = x.shape[1:3]  # static at export (a constant size keeps every shape static)
        size = [2 * h, 2 * w] if h is not None and w is not None else tf.shape(x)[1:3] * 2
        return tf.raw_ops.ResizeNearestNeighbor(images=x, size=size, align_corners=False,
                                                half_pixel_centers=False)

    def compute_output_shape(self, shape):
        return (shape[0], *(None if n is None else 2 * n for n in shape[1:3]), shape[3])


def _top_down(coarse, fine, name: str):
    """``fine`` + upsampled 1x1 projection of ``coarse`` (the projection starts at zero)."""
    x = layers.Conv2D(fine.shape[-1], 1, kernel_initializer="zeros", name=f"{name}_lateral")(coarse)
    x = Upsample2x(name=f"{name}_up")(x)
    x = layers.Add(name=f"{name}_add")([fine, x])
    # bounded like the ReLU6 tap it replaces, so the heads' int8 input step stays as fine as
    # in the plain model (unbounded, the sums spanned about -13..17)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def build_ssdlite(backbone: str | Path | None, input_hw=(320, 320), fpn: bool = False
                  ) -> tuple[keras.Model, AnchorSpec | None]:
    """(model, anchor spec at ``input_hw``); ``input_hw=(None, None)`` gives a model for any
    size (multiple of 64 for training) and no spec. ``backbone``: the ImageNet weights file
    (None: random, for tests). ``fpn``: add the top-down path (input sides must then be
    multiples of 32, so that each upsampled map matches the finer one)."""
    if backbone is not None and not Path(backbone).is_file():
        raise FileNotFoundError(f"{backbone}: the MobileNetV2 ImageNet backbone is missing; "
                                f"pass the folder that holds {BACKBONE_FILE} (--weights)")
    h, w = input_hw
    if fpn and any(side is not None and side % 32 for side in (h, w)):
        raise ValueError(f"input {h}x{w}: the SSDLite-FPN detector needs sides that are "
                         f"multiples of 32 (e.g. 256, 448, 544, 768)")
    inp = keras.Input((h, w, 3), name="image_bgr")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit")(inp)
    base = keras.applications.MobileNetV2(input_tensor=x, alpha=1.0, include_top=False,
                                          weights=str(backbone) if backbone else None)
    conv1 = base.get_layer("Conv1")
    kernel = conv1.get_weights()
    kernel[0] = kernel[0][:, :, ::-1, :].copy()  # the device feeds BGR
    conv1.set_weights(kernel)
    feats = [base.get_layer(n).output for n in TAPS]
    if fpn:
        feats[1] = _top_down(base.get_layer(FPN_SOURCE).output, feats[1], "fpn16")
        feats[0] = _top_down(feats[1], feats[0], "fpn8")
    x = feats[-1]
    for i, ch in enumerate(EXTRA_CHANNELS):
        x = _extra(x, ch, f"extra{i + 1}")
        feats.append(x)
    heads = list(enumerate(zip(feats, PRIOR_WIDTHS)))
    locs = [_head(f, len(wd), 4, f"head{i}_loc") for i, (f, wd) in heads]
    confs = [_head(f, len(wd), 2, f"head{i}_conf") for i, (f, wd) in heads]
    loc = layers.Concatenate(axis=1, name="loc")(locs)
    conf = layers.Concatenate(axis=1, name="conf")(confs)
    model = keras.Model(inp, {"loc": loc, "conf": conf},
                        name="ssdlite_fpn_mobilenetv2" if fpn else "ssdlite_mobilenetv2")
    _init_face_prior(model, math.log(PRIOR_FACE / (1 - PRIOR_FACE)))
    return model, (anchor_spec(input_hw) if h is not None else None)


def _init_face_prior(model: keras.Model, face_logit: float) -> None:
    """Start every prior at p(face) = PRIOR_FACE: background logit 0, face logit
    ``face_logit`` (the conf outputs interleave background, face per prior)."""
    for i in range(len(PRIOR_WIDTHS)):
        layer = model.get_layer(f"head{i}_conf_pw")
        kernel, bias = layer.get_weights()
        bias[1::2] = face_logit
        layer.set_weights([kernel, bias])
