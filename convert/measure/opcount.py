"""Operation counts of a TFLite model, and latency estimates for devices that are not here.

The estimates scale published per-device figures for a reference model by the ratio of
multiply-accumulates (MACs). They are estimates, not measurements: plain convolutions (res10)
usually run more MACs per second than MobileNet's depthwise ones, so a Pi estimate made from
MobileNetV2 tends to be pessimistic for the detector.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.inference.tflite import _interpreter_module

# Published times for MobileNetV2 1.0 at 224 px, int8 (300 M MACs, Sandler et al. 2018).
REFERENCE_MACS = 300e6


@dataclass(frozen=True)
class Reference:
    device: str
    ms: float       # published time per inference of the reference model on that device
    source: str


REFERENCES = (
    # Q-engineering, TensorFlow_Lite_Classification_RPi_64-bits: 45.5 frames/s, Pi 4 overclocked
    # to 1950 MHz, 64-bit OS, TFLite (4 threads). Scaled to the stock 1.5 GHz clock.
    Reference("Raspberry Pi 4, 4 threads (CPU, 1.5 GHz)", 1000 / 45.5 * 1950 / 1500,
              "github.com/Qengineering/TensorFlow_Lite_Classification_RPi_64-bits"),
    # coral.ai/docs/edgetpu/benchmarks, table 1: USB Accelerator (USB 3.0) 2.6 ms.
    Reference("Coral USB Accelerator (Edge TPU, USB 3)", 2.6, "coral.ai/docs/edgetpu/benchmarks"),
)

MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def op_counts(path: str | Path) -> tuple[int, Counter]:
    """(MACs of one inference, how many of each operator) of the ``.tflite`` at ``path``.
    The graph is read without delegates, so every operator is seen."""
    mod = _interpreter_module()
    kwargs = {}
    if hasattr(mod, "OpResolverType"):
        kwargs["experimental_op_resolver_type"] = \
            mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = mod.Interpreter(model_path=str(path), **kwargs)
    interp.allocate_tensors()
    shapes = {t["index"]: t["shape"] for t in interp.get_tensor_details()}
    macs, ops = 0, Counter()
    for op in interp._get_ops_details():  # noqa: SLF001 (the only way to walk the graph)
        name = op["op_name"]
        ops[name] += 1
        if name in MAC_OPS:
            out = int(np.prod(shapes[op["outputs"][0]]))
            w = shapes[op["inputs"][1]]
            if name == "CONV_2D":          # weights (out_c, kh, kw, in_c)
                per_output = w[1] * w[2] * w[3]
            elif name == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, c)
                per_output = w[1] * w[2]
            else:                          # FULLY_CONNECTED weights (out, in)
                per_output = w[1]
            macs += out * int(per_output)
    return macs, ops


def estimates(macs: int) -> dict[str, float]:
    """Estimated ms per inference on each reference device, for a model of ``macs``."""
    return {r.device: round(r.ms * macs / REFERENCE_MACS, 1) for r in REFERENCES}
