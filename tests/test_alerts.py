"""`maskdoor alerts` against a real mosquitto: every door under the prefix by default, each alert
printed once, doors going offline reported, and a persistent session that keeps alerts for a
subscriber that was away."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.publish as publish
import pytest

from edge.sinks.alerts import SeenIds

EXE = str(Path(sys.executable).parent / "maskdoor")


def alert(n: int, door: str) -> dict:
    return {"id": f"{door}-{n}", "time": f"2026-11-22T05:00:0{n}.000Z", "device": door,
            "type": "unmasked_face", "label": "without_mask", "label_score": 0.9, "score": 0.99,
            "box": [1, 2, 3, 4], "face_width_frac": 0.2, "track_id": n}


def follow(broker, *args, **popen) -> subprocess.Popen:
    """`maskdoor alerts` running, once it says it is listening (subscribed a moment later)."""
    proc = subprocess.Popen([EXE, "alerts", "--mqtt", broker.url, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    proc.said = proc.stderr.readline()  # blocks until connected (or the command fails)
    assert proc.said.startswith("listening on"), proc.said + proc.stderr.read()
    time.sleep(0.5)
    return proc


def send(broker, topic: str, payload: str, retain: bool = False) -> None:
    publish.single(topic, payload, qos=1, retain=retain, hostname="127.0.0.1", port=broker.port)


def stop(proc, how=signal.SIGINT) -> tuple[str, str]:
    proc.send_signal(how)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out, proc.said + err


def test_every_door_once_each_with_offline_reported(broker):
    proc = follow(broker, "--json")
    for door in ("front", "back", "garage"):
        send(broker, f"maskdoor/{door}/events", json.dumps(alert(1, door)))
    send(broker, "maskdoor/back/events", json.dumps(alert(1, "back")))  # delivered twice
    send(broker, "maskdoor/garage/availability", "offline")
    send(broker, "elsewhere/front/events", json.dumps(alert(9, "front")))  # not under the prefix
    time.sleep(1.0)
    out, err = stop(proc)
    ids = [json.loads(line)["id"] for line in out.splitlines()]
    assert sorted(ids) == ["back-1", "front-1", "garage-1"]
    assert "door garage is offline" in err


def test_count_exits_after_that_many_alerts_with_readable_lines(broker):
    proc = follow(broker, "--count", "1", "--timeout", "30")
    send(broker, "maskdoor/door1/events", json.dumps(
        {**alert(1, "door1"), "id": "x1", "label_score": 0.93, "face_width_frac": 0.18,
         "track_id": 4}))
    out, err = proc.communicate(timeout=40)
    assert proc.returncode == 0, err
    assert "door1: NO MASK (without_mask 0.93), track 4, face 18% of the frame wide  [x1]" in out


def test_one_door_only(broker):
    proc = follow(broker, "--device", "front")
    send(broker, "maskdoor/back/events", json.dumps(alert(1, "back")))
    send(broker, "maskdoor/front/events", json.dumps(alert(2, "front")))
    time.sleep(1.0)
    out, _ = stop(proc)
    assert out.splitlines() == [
        "2026-11-22T05:00:02.000Z  front: NO MASK (without_mask 0.90), track 2, face 20% of the "
        "frame wide  [front-2]"]


def ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts a background job


@pytest.mark.parametrize("how,popen", [(signal.SIGTERM, {}),
                                       (signal.SIGINT, {"preexec_fn": ignore_sigint})])
def test_sigterm_and_sigint_end_the_watch_cleanly(broker, how, popen):
    proc = follow(broker, **popen)
    send(broker, "maskdoor/front/events", json.dumps(alert(1, "front")))
    time.sleep(0.5)
    out, _ = stop(proc, how)  # exit status 0, what was received printed
    assert "[front-1]" in out


def test_a_persistent_session_keeps_alerts_sent_while_away(broker):
    stop(follow(broker, "--keep-as", "desk-1"))  # the broker now holds desk-1's subscription
    for n in range(3):
        send(broker, "maskdoor/front/events", json.dumps(alert(n, "front")))
    out, _ = stop(follow(broker, "--keep-as", "desk-1", "--json"))
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["front-0", "front-1",
                                                                     "front-2"]


def test_a_payload_that_is_not_an_alert_is_named_not_fatal(broker):
    proc = follow(broker, "--json")
    send(broker, "maskdoor/front/events", "[1, 2]")
    send(broker, "maskdoor/front/events", json.dumps(alert(5, "front")))
    time.sleep(1.0)
    out, err = stop(proc)
    assert "not a JSON alert" in err and "Traceback" not in err
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["front-5"]


def test_seen_ids_forget_the_oldest():
    seen = SeenIds(limit=2)
    assert seen.add("a") and seen.add("b") and not seen.add("a")
    assert seen.add("c") and seen.add("a")  # 'a' was forgotten once 'c' came
