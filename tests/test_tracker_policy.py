"""Tracker identities and votes, and the door policy's alert rule."""

import numpy as np

from edge.inference.fakes import ScriptedDetector
from edge.tracking.policy import DoorPolicy
from edge.tracking.tracker import IoUTracker
from edge.types import Box, Face, Frame

FRAME = Frame(np.zeros((480, 640, 3), np.uint8), 0, 0.0)


def face(x, w=100, label="without_mask", score=0.9):
    return Face(Box(x, 100, x + w, 100 + 1.2 * w), 0.95, label, score, {label: score})


def run(policy, tracker, frames):
    events = []
    for faces in frames:
        _, ev = policy.update(FRAME, tracker.update(faces))
        events += ev
    return events


def test_one_identity_per_person_across_frames():
    t = IoUTracker()
    a = t.update([face(100), face(400)])
    b = t.update([face(405), face(104)])  # order changes, people move a little
    assert [x.id for x in a] == [1, 2] and [x.id for x in b] == [2, 1]
    c = t.update([face(250)])  # someone new in between
    assert c[0].id == 3


def test_tracks_expire_after_max_missed():
    t = IoUTracker(max_missed=2)
    t.update([face(100)])
    for _ in range(3):
        t.update([])
    assert t.tracks == []
    assert t.update([face(100)])[0].id == 2


def test_vote_one_bad_frame_neither_alarms_nor_clears():
    t = IoUTracker(votes=5)
    for lab in ["with_mask"] * 4 + ["without_mask"]:
        (tr,) = t.update([face(100, label=lab)])
    assert tr.vote()[0] == "with_mask"
    for lab in ["without_mask"] * 3 + ["with_mask"]:
        (tr,) = t.update([face(100, label=lab)])
    assert tr.vote()[0] == "without_mask"


def test_alert_once_after_k_close_unmasked_frames():
    p = DoorPolicy("door", min_face_width_frac=0.10, unmasked_frames=5, clock=lambda: 1000.0)
    t = IoUTracker(votes=3)
    events = run(p, t, [[face(100)]] * 4)
    assert events == []
    events = run(p, t, [[face(100)]] * 20)
    assert len(events) == 1
    ev = events[0]
    assert ev.type == "unmasked_face" and ev.label == "without_mask" and ev.track_id == 1
    assert ev.face_width_frac == 100 / 640 and ev.device == "door"
    assert ev.time.endswith("Z") and ev.time.startswith("1970-01-01T00:16:40")
    assert set(ev.to_json()) == {"id", "time", "device", "type", "label", "label_score", "score",
                                 "box", "face_width_frac", "track_id"}


def test_far_or_masked_people_do_not_alert():
    p = DoorPolicy("door", min_face_width_frac=0.10, unmasked_frames=3)
    assert run(p, IoUTracker(), [[face(100, w=50)]] * 30) == []           # 7.8 % of the width
    assert run(p, IoUTracker(), [[face(100, label="with_mask")]] * 30) == []


def test_incorrect_mask_alarms_only_when_configured():
    frames = [[face(100, label="incorrect_mask")]] * 10
    on = run(DoorPolicy("d", unmasked_frames=3), IoUTracker(), frames)
    assert [e.type for e in on] == ["incorrect_mask"]
    off = run(DoorPolicy("d", unmasked_frames=3, alarm_on_incorrect_mask=False), IoUTracker(), frames)
    assert off == []


def test_cooldown_stops_a_refound_person_from_alerting_twice():
    now = [0.0]
    p = DoorPolicy("d", unmasked_frames=3, cooldown_s=60, clock=lambda: now[0])
    t = IoUTracker(max_missed=0)
    assert len(run(p, t, [[face(100)]] * 5)) == 1
    run(p, t, [[]] * 2)                      # lost
    now[0] = 30.0
    assert run(p, t, [[face(102)]] * 5) == []  # found again as a new track: still cooling down
    run(p, t, [[]] * 2)
    now[0] = 100.0
    assert len(run(p, t, [[face(102)]] * 5)) == 1


def test_streak_resets_when_the_person_steps_back():
    p = DoorPolicy("d", unmasked_frames=4)
    t = IoUTracker()
    frames = [[face(100)]] * 3 + [[face(100, w=40)]] + [[face(100)]] * 3
    assert run(p, t, frames) == []


def test_the_policy_keeps_its_own_state_so_two_policies_each_warn_once():
    """The streaks and who was warned live in the policy, not on the tracks: a second policy
    over the same tracks (a second door rule) warns on its own, and each warns once."""
    t, first, second = IoUTracker(), DoorPolicy("a", unmasked_frames=3), DoorPolicy("b", unmasked_frames=5)
    warned = {"a": 0, "b": 0}
    for _ in range(12):
        tracks = t.update([face(100)])
        for policy in (first, second):
            faces, events = policy.update(FRAME, tracks)
            warned[policy.device] += len(events)
    assert warned == {"a": 1, "b": 1}
    assert faces[0].unmasked_streak == 12


def test_coasting_moves_faces_at_their_speed_without_voting():
    t = IoUTracker()
    t.update([face(100)])
    t.update([face(110)])  # 10 px per frame to the right
    tracks = t.coast()
    assert len(tracks) == 1 and tracks[0].id == 1
    assert abs(tracks[0].face.box.x1 - 120) < 1e-6
    assert abs(t.coast()[0].face.box.x1 - 130) < 1e-6
    assert len(tracks[0].verdicts) == 2, "predicted frames add no verdict"
    assert t.update([face(140)])[0].id == 1, "the next detection continues the track"
    assert abs(t.tracks[0].velocity[0] - 10) < 1e-6
    still = t.coast(move=False)
    assert still[0].face.box.x1 == 140, "a still scene leaves the faces where they were"


def test_detecting_every_third_frame_still_warns_once():
    from edge.door import process_frames
    from edge.sinks import SafeSinks
    from edge.camera.sources import ArraySource
    from edge.camera.readers import SyncReader

    # a person walking right, 6 px per frame, seen every third frame
    det, ids = ScriptedDetector(lambda n: [face(100 + 6 * n * 3)]), set()
    thirty_frames = SyncReader(ArraySource([FRAME.image] * 30)).start()
    stats = process_frames(thirty_frames, det, None, IoUTracker(), DoorPolicy("d", unmasked_frames=5),
                           SafeSinks([]), detect_every=3,
                           on_frame=lambda f, faces, ev: ids.update(x.track_id for x in faces))
    assert det.calls == 10 and stats.frames == 30
    assert ids == {1}, "one identity through the predicted frames"
    assert len(stats.events) == 1
