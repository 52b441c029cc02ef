"""The whole appliance on the bundled demo clip: real int8 models, a real broker, mock pins."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from conftest import Subscriber, on_periods
from edge import config
from edge.door import process_frames
from edge.sinks import SafeSinks
from edge.service import run

EXE = str(Path(sys.executable).parent / "maskdoor")
FIELDS = {"id", "time", "device", "type", "label", "label_score", "score", "box",
          "face_width_frac", "track_id"}
MASKED_PART = 75  # the clip's masked person walks up and leaves within its first 75 frames


def cfg_for(tmp_path, **overrides):
    base = {"camera.source": "demo", "mqtt.device_id": "door1",
            "service.state_dir": str(tmp_path / "state"), "gpio.alert_s": 0.5,
            "gpio.beep_on_s": 0.05, "gpio.beep_off_s": 0.05}
    return config.load(None, {**base, **overrides})


def test_unmasked_person_gives_one_event_and_lights_and_beeps(broker, mock_pins, tmp_path):
    sub = Subscriber(broker.url, ["maskdoor/door1/#"])
    # paced like a live camera (the clip's 15 frames/s), so the clip is still playing when the
    # LED's alert_s ends, however fast this machine runs the models
    assert run(cfg_for(tmp_path, **{"mqtt.url": broker.url, "camera.realtime": True})) == 0
    assert sub.wait(lambda: sub.on("/events"), timeout=10)
    time.sleep(0.5)
    events = [json.loads(m[1]) for m in sub.on("/events")]
    assert len(events) == 1, events
    ev = events[0]
    assert set(ev) == FIELDS
    assert ev["type"] == "unmasked_face" and ev["label"] == "without_mask"
    assert ev["device"] == "door1" and ev["face_width_frac"] >= 0.10
    assert ev["time"].endswith("Z") and len(ev["box"]) == 4
    assert [m[1] for m in sub.on("/availability")][-1] == b"offline"
    red, buzzer = mock_pins.pin(17), mock_pins.pin(27)
    assert any(0.3 < length < 0.8 for _, length in on_periods(red)), on_periods(red)
    assert len(on_periods(buzzer)) == 3, "three beeps"
    assert not red.state and not buzzer.state, "everything off after a clean stop"
    sub.close()


def test_masked_person_gives_no_event(broker, mock_pins, tmp_path):
    sub = Subscriber(broker.url, ["maskdoor/door1/#"])
    assert run(cfg_for(tmp_path, **{"mqtt.url": broker.url}), max_frames=MASKED_PART) == 0
    time.sleep(0.5)
    assert sub.on("/events") == []
    states = [json.loads(m[1]) for m in sub.on("/state")]
    assert any(s["faces"] >= 1 for s in states), "the masked person was seen"
    assert all(s["unmasked"] == 0 for s in states)
    assert not mock_pins.pin(17).state and on_periods(mock_pins.pin(17)) == []
    sub.close()


def test_main_job_without_broker_prints_one_event_json(tmp_path):
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock", "STATE_DIRECTORY": str(tmp_path)}
    r = subprocess.run([EXE, "run", "--source", "demo"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1 and lines[0]["type"] == "unmasked_face"


def test_sigterm_stops_cleanly_leaving_offline_retained(broker, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[camera]\nsource = 'demo'\nloop = true\nrealtime = true\n"
                    f"[mqtt]\nurl = '{broker.url}'\ndevice_id = 'door2'\n"
                    f"[service]\nstate_dir = '{tmp_path / 'state'}'\n")
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    sub = Subscriber(broker.url, ["maskdoor/door2/availability"])
    proc = subprocess.Popen([EXE, "run", "--config", str(conf)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sub.wait(lambda: sub.on("/availability"), timeout=60), "never came online"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM received" in err
    sub.close()
    late = Subscriber(broker.url, ["maskdoor/door2/availability"])
    assert late.wait(lambda: late.on("/availability"))
    assert late.on("/availability")[-1][1:] == (b"offline", True)
    late.close()


def test_check_reports_each_part(broker, tmp_path):
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    ok = subprocess.run([EXE, "check", "--source", "demo", "--mqtt", broker.url],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for part in ("models", "camera", "broker", "pins"):
        assert f"PASS  {part}:" in ok.stdout
    broker.stop()
    bad = subprocess.run([EXE, "check", "--source", "/no/such.mp4", "--mqtt", broker.url],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1
    assert "FAIL  camera: camera.source = '/no/such.mp4'" in bad.stdout
    assert "FAIL  broker:" in bad.stdout


def test_a_failing_sink_never_stops_the_loop(caplog):
    import numpy as np

    from edge.camera.sources import ArraySource
    from edge.inference.fakes import ScriptedDetector
    from edge.sinks import Sink
    from edge.camera.readers import SyncReader

    class Broken(Sink):
        def on_state(self, *a):
            raise OSError("disk full")

    class Counter(Sink):
        n = 0

        def on_state(self, *a):
            Counter.n += 1

    from edge.tracking.policy import DoorPolicy
    from edge.tracking.tracker import IoUTracker
    reader = SyncReader(ArraySource([np.zeros((48, 64, 3), np.uint8)] * 5)).start()
    stats = process_frames(reader, ScriptedDetector(), None, IoUTracker(), DoorPolicy("d"),
                           SafeSinks([Broken(), Counter()]))
    assert stats.frames == 5 and Counter.n == 5
    assert len([r for r in caplog.records if "disk full" in r.getMessage()]) == 1


def test_detecting_every_third_frame_keeps_the_demo_verdicts(tmp_path):
    """The every-k option on the real clip: the unmasked person is still warned exactly once and
    the masked one never."""
    from edge.service import build_models
    from edge.tracking.motion import gate_for
    from edge.tracking.policy import DoorPolicy
    from edge.camera.sources import open_source
    from edge.camera.readers import reader_for
    from edge.tracking.tracker import IoUTracker
    cfg = cfg_for(tmp_path, **{"detector.every": 3})
    det, cls = build_models(cfg)
    reader = reader_for(open_source(cfg.camera), cfg.camera).start()
    masked_part_events = []
    try:
        stats = process_frames(reader, det, cls, IoUTracker(), DoorPolicy("door1"), SafeSinks([]),
                               gate=gate_for(cfg.detector), detect_every=3,
                               on_frame=lambda f, faces, ev: masked_part_events.extend(
                                   ev if f.index < MASKED_PART else []))
    finally:
        reader.stop()
    assert masked_part_events == []
    assert [e.type for e in stats.events] == ["unmasked_face"]
    assert stats.skipped_detections >= stats.frames // 2
