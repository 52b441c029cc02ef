"""SSDLite on MobileNetV2: the architecture of the shipped `full` and `door` detectors.

The backbone is Keras's MobileNetV2 (width 1.0) with the ImageNet weights in ``shared/weights``;
SSD heads read five feature maps, at strides 8 (``block_6_expand_relu``), 16
(``block_13_expand_relu``), 32 (``out_relu``) and two extra stride-2 blocks (64, 128), each head a
depthwise 3x3 + pointwise convolution (SSDLite). The new layers have biases and no
BatchNormalization: training batches are small, so the backbone's statistics stay frozen too.
Like the res10 model it takes BGR pixels 0..255 (the scaling to [-1, 1] is a layer and the
BGR->RGB swap is folded into the first convolution) and returns ``loc`` (1, N, 4) and ``conf``
(1, N, 2), so training, export and the device's decoder are the same as for res10; only the
anchor spec differs (:func:`anchor_spec`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from keras import layers  # noqa: E402

from edge.inference.ssd import AnchorSpec, FeatureMapSpec  # noqa: E402

BACKBONE_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
TAPS = ("block_6_expand_relu", "block_13_expand_relu", "out_relu")  # strides 8, 16, 32
EXTRA_CHANNELS = (256, 128)  # the stride-64 and stride-128 blocks
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


def build_ssdlite(backbone: str | Path | None, input_hw=(320, 320)
                  ) -> tuple[keras.Model, AnchorSpec | None]:
    """(model, anchor spec at ``input_hw``); ``input_hw=(None, None)`` gives a model for any
    size (multiple of 64 for training) and no spec. ``backbone``: the ImageNet weights file
    (None: random, for tests)."""
    if backbone is not None and not Path(backbone).is_file():
        raise FileNotFoundError(f"{backbone}: the MobileNetV2 ImageNet backbone is missing; "
                                f"pass the folder that holds {BACKBONE_FILE} (--weights)")
    h, w = input_hw
    inp = keras.Input((h, w, 3), name="image_bgr")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="to_unit")(inp)
    base = keras.applications.MobileNetV2(input_tensor=x, alpha=1.0, include_top=False,
                                          weights=str(backbone) if backbone else None)
    conv1 = base.get_layer("Conv1")
    kernel = conv1.get_weights()
    kernel[0] = kernel[0][:, :, ::-1, :].copy()  # the device feeds BGR
    conv1.set_weights(kernel)
    feats = [base.get_layer(n).output for n in TAPS]
    x = feats[-1]
    for i, ch in enumerate(EXTRA_CHANNELS):
        x = _extra(x, ch, f"extra{i + 1}")
        feats.append(x)
    heads = list(enumerate(zip(feats, PRIOR_WIDTHS)))
    locs = [_head(f, len(wd), 4, f"head{i}_loc") for i, (f, wd) in heads]
    confs = [_head(f, len(wd), 2, f"head{i}_conf") for i, (f, wd) in heads]
    loc = layers.Concatenate(axis=1, name="loc")(locs)
    conf = layers.Concatenate(axis=1, name="conf")(confs)
    model = keras.Model(inp, {"loc": loc, "conf": conf}, name="ssdlite_mobilenetv2")
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
