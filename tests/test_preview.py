"""The live view: its parts in-process, then a real `maskdoor run --preview`."""

import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import free_port
from edge import config
from edge.sinks import preview
from edge.errors import ConfigError
from edge.sinks.preview import LiveView, LoginGuard, draw, parse_address, suggested_threshold
from edge.types import Box, Event, Face, Frame, TrackedFace

EXE = str(Path(sys.executable).parent / "maskdoor")


def tracked(track_id=3, verdict="without_mask", x1=100.0, width=96.0, frame_w=640):
    face = Face(Box(x1, 100, x1 + width, 220), 0.98, verdict, 0.91)
    return TrackedFace(track_id, face, verdict, 0.91, width / frame_w, 0)


def frame(i=0, w=640, h=480, noise=False):
    image = (np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8) if noise
             else np.full((h, w, 3), 90, np.uint8))
    return Frame(image, i, time.time(), "test")


def view_for(password="", **overrides):
    cfg = config.load(None, {"preview.password": password, **overrides})
    return LiveView(cfg, port=0).start()


def get(view_or_port, path, password=None, source=None, timeout=10):
    port = view_or_port if isinstance(view_or_port, int) else view_or_port.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    headers = {}
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"door:{password}".encode()).decode()
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), body


# --- the parts -----------------------------------------------------------------------------------
def test_preview_address_parsing():
    assert parse_address("8080") == (None, 8080)
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_address("[::1]:81") == ("::1", 81)
    for bad in ("x", "host:", "70000", "a:b"):
        with pytest.raises(ConfigError, match=r"--preview .*HOST:PORT"):
            parse_address(bad)


def test_any_address_but_loopback_needs_a_password():
    with pytest.raises(ConfigError, match="preview.password"):
        view_for(**{"preview.bind": "0.0.0.0"})
    v = view_for("s3cret", **{"preview.bind": "0.0.0.0"})
    v.close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match=r"preview.port = \d+, .*cannot listen there"):
            LiveView(config.load(None, {"preview.port": taken.getsockname()[1]}))
    v = view_for(**{"preview.bind": "::1"})
    assert v.url == f"http://[::1]:{v.port}/"
    v.close()


def test_suggested_line_warns_at_the_face_read():
    assert suggested_threshold(0.148) == 0.14
    assert suggested_threshold(0.14) == 0.14
    assert suggested_threshold(0.29) == 0.29
    assert suggested_threshold(0.999) == 0.99


def test_drawing_boxes_in_the_verdict_colour_and_the_threshold_bar():
    img = frame().image
    out = draw(img, [tracked(verdict="without_mask"), tracked(7, "with_mask", x1=400)], 0.10)
    assert out[160, 100].tolist() == [0, 0, 255], "unmasked: red box edge"
    assert out[160, 400].tolist() == [0, 200, 0], "masked: green box edge"
    assert out[479, 60].tolist() == [255, 255, 255] and out[479, 70].tolist() == [90, 90, 90], \
        "the bar is 10% of 640 px wide"
    assert (img == 90).all(), "the loop's frame is not drawn on"


def test_login_guard_locks_out_an_address_after_five_wrong_passwords():
    guard = LoginGuard("right", allowed=5, window_s=60, lockout_s=30)
    basic = lambda p: "Basic " + base64.b64encode(f"u:{p}".encode()).decode()  # noqa: E731
    assert guard.accepts("10.0.0.1", basic("right"))
    assert not guard.accepts("10.0.0.1", None), "no credentials: refused"
    for _ in range(4):
        assert not guard.accepts("10.0.0.1", basic("wrong"))
    assert guard.locked_for("10.0.0.1") == 0, "four wrong guesses and a prompt: not locked yet"
    assert not guard.accepts("10.0.0.1", "Basic !!notbase64")
    assert 29 < guard.locked_for("10.0.0.1") <= 30
    assert guard.locked_for("10.0.0.2") == 0


def test_no_viewer_no_encode_and_one_encode_shared_per_frame():
    v = view_for()
    try:
        for i in range(20):
            v.on_frame(frame(i), [tracked()])
        status = json.loads(get(v, "/status.json")[2])
        assert status["encoded_frames"] == 0, "nobody is watching: nothing encoded"
        assert status["faces"][0]["width_frac"] == 0.15 and status["faces"][0]["close"]
        assert status["nearest"]["config_line"] == "policy.min_face_width_frac = 0.15"
        code, headers, body = get(v, "/snapshot.jpg")
        assert code == 200 and headers["Content-Type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (480, 640, 3)
        assert get(v, "/snapshot.jpg")[2] == body, "the same frame is encoded once"
        assert json.loads(get(v, "/status.json")[2])["encoded_frames"] == 1
    finally:
        v.close()


def test_page_says_it_is_live_and_needs_nothing_from_elsewhere():
    v = view_for()
    try:
        code, headers, body = get(v, "/")
        page = body.decode()
        assert code == 200 and headers["Content-Type"].startswith("text/html")
        assert "shows the door camera live" in page
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", page), "no CDN, no remote file"
        assert 'src="stream.mjpg"' in page
        assert get(v, "/nothing")[0] == 404
    finally:
        v.close()


def test_stream_is_mjpeg_of_new_frames_and_respects_max_viewers():
    v = view_for(**{"preview.max_viewers": 1, "preview.fps": 10.0})
    try:
        v.on_frame(frame(0), [])
        conn = socket.create_connection(("127.0.0.1", v.port), timeout=10)
        conn.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = conn.makefile("rb")
        head = b""
        while b"\r\n\r\n" not in head:
            head += reader.readline()
        assert b"multipart/x-mixed-replace; boundary=frame" in head
        parts = []
        for i in range(1, 3):
            line = reader.readline()
            while line.strip() != b"--frame":
                line = reader.readline()
            assert reader.readline().strip() == b"Content-Type: image/jpeg"
            length = int(reader.readline().split(b":")[1])
            reader.readline()
            parts.append(reader.read(length))
            v.on_frame(frame(i, noise=True), [])
        assert parts[0][:2] == b"\xff\xd8" and parts[1][:2] == b"\xff\xd8"
        assert parts[0] != parts[1], "a new frame, a new picture"
        assert get(v, "/stream.mjpg")[0] == 503, "beyond preview.max_viewers"
        conn.close()
    finally:
        v.close()


def test_a_viewer_gets_new_frames_at_most_preview_fps():
    v = view_for(**{"preview.fps": 4.0})
    try:
        conn = socket.create_connection(("127.0.0.1", v.port), timeout=10)
        conn.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.settimeout(0.05)
        got, t0 = b"", time.monotonic()
        i = 0
        while time.monotonic() - t0 < 2.0:  # the door hands over a new frame every 10 ms
            v.on_frame(frame(i, noise=True), [])
            i += 1
            try:
                got += conn.recv(1 << 20)
            except socket.timeout:
                pass
            time.sleep(0.01)
        conn.close()
        parts = got.count(b"--frame")
        assert 2 <= parts <= 4 * 2.0 + 1, f"{parts} pictures in 2 s at preview.fps = 4"
        assert v.encoded <= parts + 1, "frames are encoded for the viewer only"
    finally:
        v.close()


def test_a_stalled_viewer_is_dropped(monkeypatch):
    monkeypatch.setattr(preview, "SEND_TIMEOUT_S", 0.5)
    v = view_for(**{"preview.fps": 30.0, "preview.jpeg_quality": 100})
    try:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", v.port))
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        deadline = time.time() + 30
        i = 0
        seen_viewer = False
        while time.time() < deadline:
            i += 1
            v.on_frame(frame(i, 1280, 960, noise=True), [])  # ~3 MB pictures fill the buffers
            seen_viewer |= v._viewers == 1
            if seen_viewer and v._viewers == 0:
                break
            time.sleep(0.05)
        assert seen_viewer and v._viewers == 0, "the stalled viewer was dropped"
        assert get(v, "/status.json")[0] == 200, "and the view serves others"
        stalled.close()
    finally:
        v.close()


def test_wrong_passwords_get_401_then_429_from_that_address_only():
    v = view_for("s3cret")
    try:
        code, headers, _ = get(v, "/status.json")
        assert code == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert get(v, "/status.json", "s3cret")[0] == 200
        for _ in range(5):
            assert get(v, "/snapshot.jpg", "guess")[0] == 401
        code, headers, _ = get(v, "/status.json", "s3cret")
        assert code == 429 and int(headers["Retry-After"]) > 0, "locked out, even when right"
        assert get(v, "/status.json", "s3cret", source="127.0.0.2")[0] == 200
    finally:
        v.close()


def test_status_reads_the_other_sinks_and_keeps_the_last_alerts(broker, tmp_path, mock_pins):
    from edge.sinks.mqtt import MqttSink
    from edge.sinks.outbox import Outbox
    from edge.sinks.pins import DoorSignals
    cfg = config.load(None, {"mqtt.url": broker.url, "mqtt.device_id": "d1"})
    mq = MqttSink(cfg.mqtt, "d1", Outbox(tmp_path / "outbox"))
    mq.start()
    signals = DoorSignals(cfg.gpio)
    v = view_for()
    v.watch([signals, mq, v])
    try:
        ev = Event("e1", "2026-11-30T10:00:00.000Z", "d1", "unmasked_face", "without_mask", 0.93,
                   0.99, (1, 2, 3, 4), 0.2, 5)
        v.on_event(ev)
        signals.on_event(ev)
        deadline = time.time() + 10
        while not mq.connected and time.time() < deadline:
            time.sleep(0.05)
        s = json.loads(get(v, "/status.json")[2])
        assert s["broker"]["state"] == "connected" and s["broker"]["queued"] == 0
        assert s["pins"]["fitted"] and s["pins"]["red_led"] == {"pin": 17, "active": True}
        assert s["alerts"] == [{"time": ev.time, "type": "unmasked_face", "verdict":
                                "without_mask", "score": 0.93, "track_id": 5, "width_frac": 0.2}]
        broker.stop()
        while not str(mq.status).startswith("unreachable") and time.time() < deadline + 15:
            time.sleep(0.05)
        mq.on_event(ev)
        s = json.loads(get(v, "/status.json")[2])
        assert s["broker"]["state"] == "unreachable" and s["broker"]["queued"] == 1
        assert s["broker"]["broker"] == f"127.0.0.1:{broker.port}"
        assert s["broker"]["detail"] == (
            f"unreachable: connection refused; is mosquitto running and listening on port "
            f"{broker.port}?; events are kept and sent when it is back")
    finally:
        v.close()
        mq.close(flush_s=0)
        signals.close()


# --- a real `maskdoor run --preview` -------------------------------------------------------------
def start_door(tmp_path, preview_flag, password="", more_config=""):
    """`maskdoor run` on the looping demo clip, paced like a camera, with the live view."""
    conf = tmp_path / "door.toml"
    conf.write_text("[camera]\nsource = 'demo'\nloop = true\nrealtime = true\n"
                    f"[service]\nstate_dir = '{tmp_path / 'state'}'\n"
                    f"[preview]\npassword = '{password}'\n" + more_config)
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    return subprocess.Popen([EXE, "run", "--config", str(conf), "--preview", preview_flag],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(fn, timeout=60.0, every=0.2):
    end = time.time() + timeout
    while time.time() < end:
        try:
            value = fn()
            if value:
                return value
        except OSError:
            pass
        time.sleep(every)
    return fn()


def test_maskdoor_run_serves_the_view(tmp_path):
    port = free_port()
    proc = start_door(tmp_path, str(port), password="door-pw")
    try:
        status = wait_for(lambda: (lambda r: r[0] == 200 and json.loads(r[2]))(
            get(port, "/status.json", "door-pw")))
        assert status, "the view never answered"
        assert get(port, "/status.json")[0] == 401, "a password is set: none given, refused"
        assert status["detector"].startswith("face_detector_door.tflite")
        assert status["classifier"].startswith("mask_classifier")
        assert status["motion_gating"]["enabled"] is True
        assert status["broker"]["state"] == "none"
        assert status["pins"]["fitted"] is True and status["pins"]["red_led"]["pin"] == 17
        assert status["uptime_s"] >= 0 and "cpu_temp_c" in status
        later = wait_for(lambda: (lambda s: s["frames"] >= 30 and s)(
            json.loads(get(port, "/status.json", "door-pw")[2])))
        assert later["fps"] > 0 and later["frame"]["width"] == 640
        assert set(later["stage_ms"]) == {"capture", "detect", "classify", "track", "sinks"}
        assert later["encoded_frames"] == 0, "nobody watched: no frame encoded"
        code, headers, body = get(port, "/snapshot.jpg", "door-pw")
        assert code == 200 and body[:2] == b"\xff\xd8"
        assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (480, 640, 3)
        assert json.loads(get(port, "/status.json", "door-pw")[2])["encoded_frames"] == 1
        alerted = wait_for(lambda: (lambda s: s["alerts"] and s)(
            json.loads(get(port, "/status.json", "door-pw")[2])), timeout=60)
        assert alerted["alerts"][0]["type"] == "unmasked_face"
        for _ in range(5):
            assert get(port, "/", "nope")[0] == 401
        assert get(port, "/", "door-pw")[0] == 429
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert f"live view on http://127.0.0.1:{port}/ (password required)" in err
    assert not [p for p in tmp_path.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg")], \
        "no picture written to disk"


def test_maskdoor_run_refuses_an_open_view_without_password(tmp_path):
    proc = start_door(tmp_path, f"0.0.0.0:{free_port()}")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "preview.password" in err and "Traceback" not in err


def test_bench_measures_the_loop_with_the_view_off_idle_and_watched():
    from convert.measure.bench import _view_loop_fps
    from models import classifier_path, detector_path
    r = _view_loop_fps("demo", str(detector_path("door")), str(classifier_path("single")), 40)
    assert r["view off"]["encoded_frames"] == 0 and r["view on, idle"]["encoded_frames"] == 0
    watched = r["view on, one viewer"]
    assert watched["encoded_frames"] > 0 and watched["bytes_sent"] > 0, "the viewer got pictures"
    assert all(r[k]["fps"] > 0 and r[k]["cpu_ms_per_frame"] > 0
               for k in ("view off", "view on, idle", "view on, one viewer"))
    assert r["hand_off_us"] > 0 and r["encode_ms"] > 0
    assert r["one viewer, cpu ms per frame"] == round(
        watched["cpu_ms_per_frame"] - r["view off"]["cpu_ms_per_frame"], 2)
