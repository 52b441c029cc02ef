"""The door policy: who is close, unmasked for long enough, and not yet warned."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from datetime import datetime, timezone

from edge.tracking.tracker import Track
from edge.types import Box, Event, Frame, TrackedFace, Verdict

EVENT_TYPES = {Verdict.WITHOUT_MASK: "unmasked_face", Verdict.INCORRECT_MASK: "incorrect_mask"}
WARNED_REMEMBERED = 1000  # track ids already warned that the policy keeps, newest first


class DoorPolicy:
    """Turns tracked faces into alerts: one per person, after ``unmasked_frames`` consecutive
    frames in which the track's voted verdict is unmasked and its face is at least
    ``min_face_width_frac`` of the frame wide. ``cooldown_s`` stops a person whom the tracker
    lost and found again in about the same place from being warned twice."""

    def __init__(self, device: str, min_face_width_frac: float = 0.10, unmasked_frames: int = 5,
                 alarm_on_incorrect_mask: bool = True, cooldown_s: float = 60.0, clock=time.time):
        self.device = device
        self.min_frac = min_face_width_frac
        self.k = unmasked_frames
        self.alarm_labels = {Verdict.WITHOUT_MASK} | (
            {Verdict.INCORRECT_MASK} if alarm_on_incorrect_mask else set())
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._recent: list[tuple[float, Box]] = []  # (time, box) of recent alerts
        # per track id: consecutive frames close and unmasked, for the tracks of the last frame
        # (a track missing from a frame starts again from zero)
        self._streaks: dict[int, int] = {}
        self._warned: OrderedDict[int, None] = OrderedDict()  # ids warned (or held back) once

    def update(self, frame: Frame, tracks: list[Track]) -> tuple[list[TrackedFace], list[Event]]:
        now = self.clock()
        self._recent = [(t, b) for t, b in self._recent if now - t < self.cooldown_s]
        faces, events, streaks = [], [], {}
        for tr in tracks:
            verdict, vscore = tr.vote()
            frac = tr.face.box.width / max(frame.width, 1)
            close_unmasked = verdict in self.alarm_labels and frac >= self.min_frac
            streak = streaks[tr.id] = self._streaks.get(tr.id, 0) + 1 if close_unmasked else 0
            if streak >= self.k and tr.id not in self._warned:
                self._warn_once(tr.id)
                if not any(tr.face.box.iou(b) > 0.2 for _, b in self._recent):
                    events.append(self._event(tr, verdict, vscore, frac, now))
                    self._recent.append((now, tr.face.box))
            faces.append(TrackedFace(tr.id, tr.face, verdict, vscore, frac, streak))
        self._streaks = streaks
        return faces, events

    def _warn_once(self, track_id: int) -> None:
        self._warned[track_id] = None
        if len(self._warned) > WARNED_REMEMBERED:  # a track lives minutes; a door sees few alerts
            self._warned.popitem(last=False)

    def _event(self, tr: Track, verdict: Verdict, vscore: float, frac: float, now: float) -> Event:
        b = tr.face.box
        return Event(id=str(uuid.uuid4()),
                     time=datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="milliseconds")
                     .replace("+00:00", "Z"),
                     device=self.device, type=EVENT_TYPES[verdict], label=verdict,
                     label_score=vscore, score=tr.face.score, box=(b.x1, b.y1, b.x2, b.y2),
                     face_width_frac=frac, track_id=tr.id)
