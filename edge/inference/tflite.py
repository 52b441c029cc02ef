"""The one place that loads TFLite models, on LiteRT or tflite-runtime (``detector.runtime``).

An :class:`Model` is built once at start-up and then called per frame. It reads everything
about its input and outputs from the ``.tflite`` file itself (size, dtype, scale, zero point),
so the caller hands it float-free uint8 pixels and gets dequantised float arrays back.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ModelError, RuntimeMissingError

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"


@dataclass(frozen=True)
class Runtime:
    """A TFLite interpreter package: its ``detector.runtime`` name, module, distribution and
    the command that installs it."""

    name: str
    module: str
    dist: str
    install: str


# In the order 'auto' tries them.
RUNTIMES = (
    Runtime("litert", "ai_edge_litert.interpreter", "ai-edge-litert",
            "`pip install ai-edge-litert`"),
    Runtime("tflite-runtime", "tflite_runtime.interpreter", "tflite-runtime",
            "`pip install '.[tflite-runtime]'` in maskdoor's checkout, with the venv's pip "
            "(wheels up to Python 3.11 only; it needs numpy<2)"),
)
RUNTIME_CHOICES = ("auto", *(r.name for r in RUNTIMES))


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape, dtype and affine quantisation (real = scale * (q - zero_point))."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: type
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0


def sidecar_path(model_path: str | Path) -> Path:
    """The JSON beside a model (same stem) with what the device needs to use it."""
    return Path(model_path).with_suffix(".json")


def read_json(path: str | Path, missing: str):
    """A model's JSON file; ModelError naming the file when it is absent (``missing`` says why
    it matters and the fix) or not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: {missing}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc


def read_spec(path: str | Path, fmt: str, title: str, kind: str, names: str) -> dict:
    """A JSON spec that combines several models, its ``format`` checked: ``title`` names the
    spec ('multi-pass detector'), ``kind`` the model ('detector') and ``names`` the shipped ones."""
    spec = read_json(path, f"{kind} spec not found; name a shipped {kind} ({names}) or an "
                           "existing .tflite / .json file")
    if not isinstance(spec, dict) or spec.get("format") != fmt:
        raise ModelError(f"{path}: not a {title} spec (format must be {fmt!r}); give the "
                         ".tflite file for a single model")
    return spec


def load_sidecar(model_path: str | Path, holds: str = "the settings") -> dict:
    """Read a model's JSON sidecar; ``holds`` says what it holds, for the error message."""
    return read_json(sidecar_path(model_path),
                     f"missing; it holds {holds} of {Path(model_path).name}. Keep the .json "
                     "beside the .tflite (both come from `python -m convert`).")


def _interpreter_module(runtime: str | None = None):
    """The interpreter module of ``runtime`` ('litert', 'tflite-runtime'; None or 'auto': the
    first of RUNTIMES that imports)."""
    if runtime in (None, "auto"):
        order = RUNTIMES
    else:
        order = tuple(r for r in RUNTIMES if r.name == runtime)
        if not order:
            raise ValueError(f"runtime {runtime!r}: must be one of {', '.join(RUNTIME_CHOICES)}")
    errors = []
    for r in order:
        try:
            return importlib.import_module(r.module)
        except ImportError as exc:  # numpy 2 breaks tflite-runtime 2.14 with ImportError too
            errors.append(f"{r.module}: {exc}")
    if runtime not in (None, "auto"):
        raise RuntimeMissingError(
            f"detector.runtime = '{runtime}' but its interpreter cannot be imported "
            f"({errors[0]}). Install it with {order[0].install}, or set detector.runtime = "
            "'auto' (or leave out --runtime).")
    raise RuntimeMissingError(
        "no TFLite interpreter could be imported (" + "; ".join(errors) + "). "
        "Install LiteRT with `pip install ai-edge-litert` (or tflite-runtime with numpy<2).")


def runtime_name(runtime: str | None = None) -> str:
    """The interpreter module that :class:`Model` would use, e.g. 'ai_edge_litert.interpreter'."""
    return _interpreter_module(runtime).__name__


def runtime_version(module: str) -> str:
    """An interpreter (``Model.runtime``, e.g. 'ai_edge_litert') with its installed version:
    'ai_edge_litert 2.3.0'."""
    for r in RUNTIMES:
        if r.module.split(".")[0] == module:
            try:
                return f"{module} {importlib.metadata.version(r.dist)}"
            except importlib.metadata.PackageNotFoundError:
                break
    return module


class Model:
    """A loaded TFLite model: ``model(uint8_or_float_input) -> list of float outputs``.

    ``threads`` sets the interpreter's CPU threads; ``edgetpu=True`` loads the Edge TPU
    delegate (the model must then be compiled for the Edge TPU); ``runtime`` picks the
    interpreter: 'litert', 'tflite-runtime' or 'auto' (None: the first that imports).
    """

    def __init__(self, path: str | Path, threads: int = 1, edgetpu: bool = False,
                 runtime: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}. Check the path in the config "
                             "(detector.model / classifier.model) or reinstall maskdoor's models.")
        mod = _interpreter_module(runtime)
        delegates = [self._edgetpu_delegate(mod)] if edgetpu else None
        try:
            self._interp = mod.Interpreter(model_path=str(self.path), num_threads=max(1, threads),
                                           experimental_delegates=delegates)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: not a loadable TFLite model ({exc}). "
                             "Rebuild it with `python -m convert` or restore the shipped file.") from exc
        self.runtime = mod.__name__.split(".")[0]
        self.threads = threads
        self.inputs = [self._info(d) for d in self._interp.get_input_details()]
        self.outputs = [self._info(d) for d in self._interp.get_output_details()]
        if len(self.inputs) != 1:
            raise ModelError(f"{self.path}: expected one input tensor, found {len(self.inputs)}")

    @staticmethod
    def _edgetpu_delegate(mod):
        try:
            return mod.load_delegate(EDGETPU_LIBRARY)
        except (ValueError, OSError) as exc:
            raise RuntimeMissingError(
                f"the Edge TPU library {EDGETPU_LIBRARY} could not be loaded ({exc}). Install it "
                "with `sudo apt install libedgetpu1-std` (Coral's apt repository), plug the Coral "
                "in, or set `detector.edgetpu = false` to run on the CPU.") from exc

    @staticmethod
    def _info(d: dict) -> TensorInfo:
        scale, zero = d.get("quantization", (0.0, 0))
        return TensorInfo(d["name"], d["index"], tuple(int(s) for s in d["shape"]), d["dtype"],
                          float(scale), int(zero))

    @property
    def input(self) -> TensorInfo:
        return self.inputs[0]

    @property
    def kind(self) -> str:
        """'int8' for a quantised input, else 'float' (for describing a model)."""
        return "int8" if self.input.quantized else "float"

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) of an NHWC image input."""
        return self.input.shape[1], self.input.shape[2]

    def input_buffer(self) -> np.ndarray:
        """A writable view of the input tensor: fill it in place to skip one copy per frame."""
        return self._interp.tensor(self.input.index)()[0]

    def input_batch(self) -> np.ndarray:
        """A writable view of the whole input tensor, batch axis first."""
        return self._interp.tensor(self.input.index)()

    @property
    def batch(self) -> int:
        return self.input.shape[0]

    def set_batch(self, n: int) -> None:
        """Resize the batch axis of the input to ``n`` (models whose graph allows it; an Edge
        TPU model does not). Raises ModelError when the model refuses."""
        if n == self.batch:
            return
        try:
            self._interp.resize_tensor_input(self.input.index, [n, *self.input.shape[1:]])
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: batch of {n} refused ({exc})") from exc
        self.inputs = [self._info(d) for d in self._interp.get_input_details()]
        self.outputs = [self._info(d) for d in self._interp.get_output_details()]

    def set_input(self, array: np.ndarray, batched: bool = False) -> None:
        """Quantise (if needed) and copy one input sample (without batch axis), or a whole
        batch with ``batched=True``."""
        info = self.input
        if array.dtype != info.dtype:
            if info.quantized and array.dtype.kind == "f":
                array = np.round(array / info.scale + info.zero_point)
                lim = np.iinfo(info.dtype)
                array = np.clip(array, lim.min, lim.max)
            array = array.astype(info.dtype)
        self._interp.set_tensor(info.index, array if batched else array[None])

    def invoke(self) -> list[np.ndarray]:
        """Run the model on the current input; float outputs, batch axis kept."""
        self._interp.invoke()
        return [self.output(i) for i in range(len(self.outputs))]

    def output(self, i: int) -> np.ndarray:
        info = self.outputs[i]
        raw = self._interp.get_tensor(info.index)
        if info.quantized:
            return (raw.astype(np.float32) - info.zero_point) * info.scale
        return raw

    def __call__(self, array: np.ndarray) -> list[np.ndarray]:
        self.set_input(array)
        return self.invoke()

    def output_named(self, fragment: str) -> int:
        """Index of the output whose name contains ``fragment``."""
        for i, o in enumerate(self.outputs):
            if fragment in o.name:
                return i
        raise ModelError(f"{self.path}: no output named like {fragment!r} "
                         f"(outputs: {[o.name for o in self.outputs]})")


class OneModel:
    """Mixin for a wrapper around one ``Model`` (``self.model``): its file, alone and as the
    list of models run per call (which several-model wrappers also give)."""

    model: Model

    @property
    def path(self) -> Path:
        return self.model.path

    def model_paths(self) -> list[Path]:
        return [self.model.path]
