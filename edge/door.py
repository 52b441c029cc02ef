"""The door loop: source -> detector -> classifier -> tracker -> policy -> sinks.

:func:`process_frames` receives every stage as an argument and runs until the source ends,
``max_frames`` frames are done, or ``stop`` is set, so a test can drive it with a file. Sinks
(MQTT or stdout first, then LED/buzzer) are called through ``edge.sinks.SafeSinks``: a failing
sink is logged once and skipped, and the door loop carries on. ``edge.service`` builds the
stages from the config and runs this loop under systemd.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from edge.sinks import SafeSinks

if TYPE_CHECKING:
    from edge.camera.readers import FrameReader
    from edge.inference.classifier import Classifier
    from edge.inference.detectors import Detector
    from edge.sdnotify import Notifier
    from edge.tracking.motion import MotionGate
    from edge.tracking.policy import DoorPolicy
    from edge.tracking.tracker import IoUTracker

log = logging.getLogger(__name__)

STAGES = ("capture", "detect", "classify", "track", "sinks")


@dataclass
class RunStats:
    frames: int = 0
    events: list = field(default_factory=list)
    stage_ms: dict = field(default_factory=lambda: defaultdict(lambda: deque(maxlen=500)))
    started: float = field(default_factory=time.monotonic)
    first_frame_s: float | None = None
    first_frame_wall: float | None = None

    skipped_detections: int = 0

    def summary(self, dropped: int = 0) -> dict:
        elapsed = time.monotonic() - self.started
        return {"frames": self.frames, "fps": round(self.frames / elapsed, 2) if elapsed else 0.0,
                "stage_ms": {k: round(statistics.median(v), 2) for k, v in self.stage_ms.items()
                             if v},
                "dropped_frames": dropped, "events": len(self.events),
                "skipped_detections": self.skipped_detections,
                "uptime_s": round(elapsed, 1), "cpu_temp_c": cpu_temperature()}


def cpu_temperature() -> float | None:
    """The SoC temperature where Linux exposes it (Raspberry Pi: thermal_zone0)."""
    try:
        return round(int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000, 1)
    except (OSError, ValueError):
        return None


def process_frames(reader: FrameReader, detector: Detector, classifier: Classifier | None,
                   tracker: IoUTracker, policy: DoorPolicy, sinks: SafeSinks,
                   max_frames: int | None = None, stop: threading.Event | None = None,
                   notifier: Notifier | None = None, stats_interval_s: float = 0.0,
                   snapshot: bool = False, on_frame=None, gate: MotionGate | None = None,
                   detect_every: int = 1, stats: RunStats | None = None) -> RunStats:
    """Run the door until the source ends, ``max_frames`` are done, or ``stop`` is set.

    The detector and classifier run on every ``detect_every``-th frame; on the frames between,
    the tracker carries the faces on at their measured speed. With a ``gate``, frames where
    nothing moved keep the last faces where they are."""
    stats = stats if stats is not None else RunStats()  # one given is read by the live view
    stop = stop or threading.Event()
    next_stats = time.monotonic() + stats_interval_s if stats_interval_s else None
    while not stop.is_set() and (max_frames is None or stats.frames < max_frames):
        t0 = time.perf_counter()
        frame = reader.get(timeout=1.0)
        t1 = time.perf_counter()
        if frame is None:
            if reader.ended:
                break
            if notifier is not None and not reader.hung:
                notifier.watchdog()  # a slow or reopening camera: alive; a hung one: restart
            continue
        due = stats.frames % detect_every == 0
        fresh = due and (gate is None or gate.moved(frame.image))
        faces = []
        if fresh:
            faces = detector.detect(frame.image, lores=frame.lores) if frame.lores is not None \
                else detector.detect(frame.image)
        t2 = time.perf_counter()
        if fresh and classifier is not None and faces:
            faces = classifier.classify(frame.image, faces)
        t3 = time.perf_counter()
        tracks = tracker.update(faces) if fresh else tracker.coast(move=not due)
        tracked, events = policy.update(frame, tracks)
        t4 = time.perf_counter()
        for ev in events:
            jpeg = None
            if snapshot:
                ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 85])
                jpeg = buf.tobytes() if ok else None
            sinks.event(ev, jpeg)  # queued (and synced) by the first sink before anything says so
            log.info("alert %s: %s track %d (%s %.2f), face %.0f%% of frame width", ev.id,
                     ev.type, ev.track_id, ev.label, ev.label_score, 100 * ev.face_width_frac)
            stats.events.append(ev)
        sinks.frame(frame, tracked)
        t5 = time.perf_counter()
        for name, a, b in zip(STAGES, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
            stats.stage_ms[name].append((b - a) * 1000)
        stats.frames += 1
        stats.skipped_detections += not fresh
        if stats.first_frame_s is None:
            stats.first_frame_s = time.monotonic() - stats.started
            stats.first_frame_wall = time.time()
        if on_frame is not None:
            on_frame(frame, tracked, events)
        if notifier is not None:
            notifier.watchdog()
        if next_stats is not None and time.monotonic() >= next_stats:
            next_stats += stats_interval_s
            sinks.stats(stats.summary(reader.dropped))
    return stats
