"""Face detectors: one protocol, one module per format.

A detector is named by a file: a ``.tflite`` (its JSON sidecar says ``"format":
"maskdoor-ssd/1"``) or a JSON spec whose ``format`` names how to run the models it lists.
:func:`load_detector` reads that format and builds the class registered for it. To add a format,
write a module here with a class that satisfies :class:`Detector`, decorate it with
``@register("your-format/1")`` and import the module at the foot of this file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from edge.errors import ModelError
from edge.types import Face


class Detector(Protocol):
    """What the door loop, ``maskdoor detect`` and the benchmarks may call on a detector."""

    path: Path  # the file it was loaded from
    score_threshold: float

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) of the first model's input: the size a camera's second stream uses."""

    def detect(self, image: np.ndarray, threshold: float | None = None,
               lores: np.ndarray | None = None) -> list[Face]:
        """Faces in ``image`` (BGR), boxes in its pixels."""

    def describe(self) -> str:
        """One line for logs and ``maskdoor check``, e.g. 'int8 448x448 (litert)'."""

    def model_paths(self) -> list[Path]:
        """The ``.tflite`` files run per image."""


DETECTOR_FORMATS: dict[str, Callable[..., Detector]] = {}


def register(fmt: str):
    """Class decorator: the detector built for files whose format is ``fmt``."""
    def add(cls):
        cls.format = fmt
        DETECTOR_FORMATS[fmt] = cls
        return cls
    return add


def check_fraction(path: Path, spec: dict, key: str, command: str) -> None:
    """``spec[key]`` must be a number from 0 to 1, else a ModelError naming the key and the
    ``python -m convert`` command that chooses it."""
    v = spec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ModelError(f"{path}: '{key}' missing or not a number from 0 to 1 ({v!r}); "
                         f"`python -m convert {command}` chooses it on val")


def spec_format(path: Path) -> str | None:
    """The ``format`` a detector file declares: the JSON spec's own, or for a ``.tflite`` its
    sidecar's; None when unreadable (the detector's loader then explains what is wrong)."""
    spec = path if path.suffix == ".json" else path.with_suffix(".json")
    try:
        fmt = json.loads(spec.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    return fmt if isinstance(fmt, str) else None


def load_detector(model_path: str | Path, threads: int = 1, threshold: float | None = None,
                  edgetpu: bool = False, runtime: str | None = None) -> Detector:
    """The detector for ``model_path``, a ``.tflite`` or a ``.json`` spec, built by the class
    registered for its format. A file whose format is missing or unknown goes to the loader
    that explains it: the SSD loader for a ``.tflite``, the multi-pass one for a ``.json``."""
    model_path = Path(model_path)
    spec = model_path.suffix == ".json"
    fmt = spec_format(model_path)
    if spec and fmt == SSD_FORMAT:  # a .tflite's sidecar, not a spec
        fmt = None
    cls = DETECTOR_FORMATS.get(fmt, DETECTOR_FORMATS[MULTIPASS_FORMAT if spec else SSD_FORMAT])
    return cls(model_path, threads=threads, threshold=threshold, edgetpu=edgetpu, runtime=runtime)


# each module registers its format on import
from edge.inference.detectors.tflite_ssd import SSD_FORMAT  # noqa: E402
from edge.inference.detectors.multipass import MULTIPASS_FORMAT  # noqa: E402
from edge.inference.detectors import verified  # noqa: E402,F401
