"""One identity per person across frames, and a vote over each track's recent verdicts."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field, replace

import numpy as np

from edge.inference.ssd import iou_matrix
from edge.types import Box, Face, Verdict


@dataclass
class Track:
    id: int
    face: Face
    missed: int = 0
    verdicts: deque = field(default_factory=deque)
    scores: deque = field(default_factory=deque)
    detected: Face | None = None  # the face as last detected (``face`` may be predicted)
    detected_at: int = 0          # tracker frame number of that detection
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box px per frame

    def vote(self) -> tuple[Verdict | None, float]:
        """Majority verdict of the recent frames, and its mean score; ties go to the latest."""
        if not self.verdicts:
            return None, 0.0
        counts = Counter(self.verdicts)
        best = max(counts.values())
        for label in reversed(self.verdicts):
            if counts[label] == best:
                scores = [s for v, s in zip(self.verdicts, self.scores) if v == label]
                return label, float(np.mean(scores))
        return None, 0.0


def _corners(box) -> np.ndarray:
    return np.array([box.x1, box.y1, box.x2, box.y2], np.float64)


class IoUTracker:
    """Greedy IoU matching of this frame's faces to live tracks.

    ``iou``: least overlap that continues a track; ``max_missed``: frames a track survives
    unseen; ``votes``: how many recent verdicts each track votes over.

    Frames on which the detector does not run go to :meth:`coast` instead of :meth:`update`:
    the tracks seen at the last detection carry on, moved at their measured speed.
    """

    def __init__(self, iou: float = 0.3, max_missed: int = 10, votes: int = 7):
        self.iou = iou
        self.max_missed = max_missed
        self.votes = votes
        self.tracks: list[Track] = []
        self._next_id = 1
        self._frame = 0
        self._last_seen: list[Track] = []

    def coast(self, move: bool = True) -> list[Track]:
        """A frame without detection: the tracks of the last detection, each box predicted from
        its speed (``move=False``: left where it was, for a scene where nothing moved). No
        verdict is added and no track ages."""
        self._frame += 1
        for t in self._last_seen:
            if move and t.detected is not None:
                b = _corners(t.detected.box) + t.velocity * (self._frame - t.detected_at)
                t.face = replace(t.detected, box=Box(*b.tolist()))
        return list(self._last_seen)

    def update(self, faces: list[Face]) -> list[Track]:
        """Feed this frame's faces; returns the tracks seen in this frame, in face order."""
        self._frame += 1
        live = self.tracks
        seen: list[Track | None] = [None] * len(faces)
        if live and faces:
            a = np.array([[f.box.x1, f.box.y1, f.box.x2, f.box.y2] for f in faces])
            b = np.array([[t.face.box.x1, t.face.box.y1, t.face.box.x2, t.face.box.y2]
                          for t in live])
            ious = iou_matrix(a, b)
            pairs = sorted(((ious[i, j], i, j) for i in range(len(faces)) for j in range(len(live))
                            if ious[i, j] >= self.iou), reverse=True)
            used_f, used_t = set(), set()
            for _, i, j in pairs:
                if i in used_f or j in used_t:
                    continue
                used_f.add(i)
                used_t.add(j)
                seen[i] = live[j]
        for i, face in enumerate(faces):
            t = seen[i]
            if t is None:
                t = Track(self._next_id, face, verdicts=deque(maxlen=self.votes),
                          scores=deque(maxlen=self.votes))
                self._next_id += 1
                self.tracks.append(t)
                seen[i] = t
            if t.detected is not None:  # speed from the last two detections, smoothed
                step = (_corners(face.box) - _corners(t.detected.box)) / max(
                    self._frame - t.detected_at, 1)
                t.velocity = 0.5 * t.velocity + 0.5 * step if t.velocity.any() else step
            t.face, t.missed, t.detected, t.detected_at = face, 0, face, self._frame
            if face.label is not None:
                t.verdicts.append(face.label)
                t.scores.append(face.label_score or 0.0)
        current = {id(t) for t in seen}
        for t in self.tracks:
            if id(t) not in current:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        self._last_seen = list(seen)  # type: ignore[arg-type]
        return seen  # type: ignore[return-value]
