"""One identity per person across frames, and a vote over each track's recent verdicts."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from edge.ssd import iou_matrix
from edge.types import Face


@dataclass
class Track:
    id: int
    face: Face
    missed: int = 0
    verdicts: deque = field(default_factory=deque)
    scores: deque = field(default_factory=deque)
    streak: int = 0          # consecutive frames close and unmasked (kept by the policy)
    alerted: bool = False

    def vote(self) -> tuple[str | None, float]:
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


class IoUTracker:
    """Greedy IoU matching of this frame's faces to live tracks.

    ``iou``: least overlap that continues a track; ``max_missed``: frames a track survives
    unseen; ``votes``: how many recent verdicts each track votes over.
    """

    def __init__(self, iou: float = 0.3, max_missed: int = 10, votes: int = 7):
        self.iou = iou
        self.max_missed = max_missed
        self.votes = votes
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, faces: list[Face]) -> list[Track]:
        """Feed this frame's faces; returns the tracks seen in this frame, in face order."""
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
            t.face, t.missed = face, 0
            if face.label is not None:
                t.verdicts.append(face.label)
                t.scores.append(face.label_score or 0.0)
        current = {id(t) for t in seen}
        for t in self.tracks:
            if id(t) not in current:
                t.missed += 1
                t.streak = 0
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return seen  # type: ignore[return-value]
