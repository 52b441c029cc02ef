"""Motion gating: detector skipped on still frames, forced every N, faces kept meanwhile."""

import numpy as np

from edge.door import process_frames
from edge.sinks import SafeSinks
from edge.tracking.motion import MotionGate
from edge.tracking.policy import DoorPolicy
from edge.camera.sources import ArraySource
from edge.camera.readers import SyncReader
from edge.tracking.tracker import IoUTracker
from edge.inference.fakes import ScriptedDetector
from edge.types import Box, Face, Verdict

rng = np.random.default_rng(0)
STILL = rng.integers(0, 255, (120, 160, 3)).astype(np.uint8)


def test_still_frames_skip_and_force_every_n():
    gate = MotionGate(force_every=5)
    runs = [gate.moved(STILL) for _ in range(11)]
    assert runs == [True, False, False, False, False, True, False, False, False, False, True]
    assert gate.skipped == 8


def test_a_change_runs_the_detector():
    gate = MotionGate(force_every=100)
    gate.moved(STILL)
    moved = STILL.copy()
    moved[20:80, 40:100] = 255 - moved[20:80, 40:100]  # someone steps in
    assert gate.moved(moved) is True
    assert gate.moved(moved) is False


def test_sensor_noise_is_not_motion():
    gate = MotionGate(force_every=100)
    gate.moved(STILL)
    noisy = np.clip(STILL.astype(int) + rng.integers(-4, 5, STILL.shape), 0, 255).astype(np.uint8)
    assert gate.moved(noisy) is False


def test_loop_keeps_the_last_faces_while_nothing_moves():
    det = ScriptedDetector([Face(Box(10, 10, 60, 70), 0.9, Verdict.WITHOUT_MASK, 0.9,
                                 {Verdict.WITHOUT_MASK: 0.9})])
    seen = []
    stats = process_frames(SyncReader(ArraySource([STILL] * 10)).start(), det, None, IoUTracker(), DoorPolicy("d", unmasked_frames=3),
                           SafeSinks([]), gate=MotionGate(force_every=4),
                           on_frame=lambda f, faces, ev: seen.append(len(faces)))
    assert det.calls == 3 and stats.skipped_detections == 7
    assert seen == [1] * 10, "faces stand on skipped frames"
    assert len(stats.events) == 1, "a person standing still at the door is still warned"
