"""Small immutable values passed between the stages of the pipeline."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates, corners (x1, y1) inclusive to (x2, y2)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    def scale(self, sx: float, sy: float) -> "Box":
        return Box(self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy)

    def clip(self, width: float, height: float) -> "Box":
        return Box(min(max(self.x1, 0.0), width), min(max(self.y1, 0.0), height),
                   min(max(self.x2, 0.0), width), min(max(self.y2, 0.0), height))

    def intersect(self, other: "Box") -> "Box":
        return Box(max(self.x1, other.x1), max(self.y1, other.y1),
                   max(min(self.x2, other.x2), max(self.x1, other.x1)),
                   max(min(self.y2, other.y2), max(self.y1, other.y1)))

    def iou(self, other: "Box") -> float:
        inter = self.intersect(other).area
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def expand(self, margin: float) -> "Box":
        """Grow each side by ``margin`` times the box's width/height."""
        dx, dy = self.width * margin, self.height * margin
        return Box(self.x1 - dx, self.y1 - dy, self.x2 + dx, self.y2 + dy)

    def as_list(self, ndigits: int = 1) -> list[float]:
        return [round(v, ndigits) for v in (self.x1, self.y1, self.x2, self.y2)]


def box_array(boxes: Iterable[Box]) -> np.ndarray:
    """Boxes as an (N, 4) float32 array of x1, y1, x2, y2 (N may be 0)."""
    return np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], np.float32).reshape(-1, 4)


def face_arrays(faces: Iterable["Face"]) -> tuple[np.ndarray, np.ndarray]:
    """Faces as (boxes (N, 4) x1 y1 x2 y2, scores (N,)) arrays."""
    faces = list(faces)
    return box_array(f.box for f in faces), np.array([f.score for f in faces], np.float32)


class Verdict(str, Enum):
    """What the mask classifier says of a face. A ``str``, so JSON payloads and comparisons with
    the label strings of the models' sidecars stay as they were."""

    WITH_MASK = "with_mask"
    WITHOUT_MASK = "without_mask"
    INCORRECT_MASK = "incorrect_mask"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def unmasked(cls) -> frozenset["Verdict"]:
        """The verdicts that mean 'not properly masked'."""
        return frozenset({cls.WITHOUT_MASK, cls.INCORRECT_MASK})


@dataclass(frozen=True)
class Face:
    """A detected face: box in image pixels, detector confidence, and (later) a mask verdict."""

    box: Box
    score: float
    label: Verdict | None = None
    label_score: float | None = None
    probs: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        out: dict = {"box": self.box.as_list(), "score": round(self.score, 4)}
        if self.label is not None:
            out["label"] = self.label
            out["label_score"] = round(float(self.label_score), 4)
            out["probs"] = {k: round(float(v), 4) for k, v in self.probs.items()}
        return out


@dataclass(frozen=True)
class Frame:
    """One captured frame: BGR pixels, its sequence number and capture time (epoch seconds)."""

    image: object  # numpy array (H, W, 3) uint8: the main stream, drawn on and cropped from
    index: int
    time: float
    source: str = ""
    lores: object = None  # the same view at the detector's input size, when the camera makes one

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class TrackedFace:
    """A face in this frame with its track identity and the track's voted verdict."""

    track_id: int
    face: Face
    verdict: Verdict | None
    verdict_score: float
    width_frac: float
    unmasked_streak: int


@dataclass(frozen=True)
class Event:
    """An alert: what the door tells people. ``to_json`` is the MQTT ``events`` payload."""

    id: str
    time: str
    device: str
    type: str
    label: str
    label_score: float
    score: float
    box: tuple[float, float, float, float]
    face_width_frac: float
    track_id: int

    def to_json(self) -> dict:
        return {"id": self.id, "time": self.time, "device": self.device, "type": self.type,
                "label": self.label, "label_score": round(self.label_score, 4),
                "score": round(self.score, 4), "box": [round(v, 1) for v in self.box],
                "face_width_frac": round(self.face_width_frac, 4), "track_id": self.track_id}
