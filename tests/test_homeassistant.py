"""What Home Assistant sees of a door: the discovery configs, the event entity's template output,
and the retained state across start, clean stop, kill -9 and restart of a real `maskdoor run`.

Checks that need Home Assistant itself run when a Home Assistant venv is found ($HA_VENV, else
/opt/ha-venv); tests/homeassistant/run.sh runs the whole door against a real one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT, Subscriber
from edge import config
from edge.sinks.mqtt import MqttSink
from edge.sinks.outbox import Outbox

EXE = str(Path(sys.executable).parent / "maskdoor")
FIELDS = {"id", "time", "device", "type", "label", "label_score", "score", "box",
          "face_width_frac", "track_id"}
ALERT = {"id": "x1", "time": "2026-11-22T05:00:00.000Z", "device": "door1",
         "type": "incorrect_mask", "label": "incorrect_mask", "label_score": 0.91, "score": 0.99,
         "box": [10.0, 20.0, 110.0, 140.0], "face_width_frac": 0.156, "track_id": 4}


def ha_venv() -> Path | None:
    for d in (os.environ.get("HA_VENV"), "/opt/ha-venv"):
        if d and (Path(d) / "bin" / "hass").exists():
            return Path(d)
    return None


def door_sink(tmp_path, **kw) -> MqttSink:
    cfg = SimpleNamespace(**{**vars(config.load(None).mqtt), "url": "mqtt://127.0.0.1:1", **kw})
    return MqttSink(cfg, "Door-1", Outbox(tmp_path / "outbox"))


def test_discovery_follows_home_assistant_conventions(tmp_path):
    configs = door_sink(tmp_path, area="Entrance").discovery_configs()
    qos = {c["object_id"]: c["qos"] for c in configs.values()}
    assert qos.pop("door_1_mask_alert") == 2, "alerts exactly once"
    assert set(qos.values()) == {1}, "QoS 1 for every other entity"
    assert all(c["origin"]["name"] == "maskdoor" and c["origin"]["sw_version"]
               for c in configs.values())
    assert all(c["device"]["suggested_area"] == "Entrance" for c in configs.values())
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    ids = {t.split("/")[1] + "." + c["object_id"] for t, c in configs.items()}
    assert {"binary_sensor.door_1_unmasked", "sensor.door_1_faces",
            "event.door_1_mask_alert"} <= ids
    diag = {c["object_id"] for c in configs.values() if c.get("entity_category") == "diagnostic"}
    assert diag == {c["object_id"] for c in configs.values()
                    if c["state_topic"].endswith("/stats")}
    assert {"door_1_fps", "door_1_cpu_temperature", "door_1_queued_events",
            "door_1_dropped_events", "door_1_broker"} == diag
    by_id = {c["object_id"]: c for c in configs.values()}
    assert by_id["door_1_faces"]["state_class"] == "measurement"
    assert by_id["door_1_cpu_temperature"]["device_class"] == "temperature"
    assert by_id["door_1_dropped_events"]["state_class"] == "total_increasing"
    assert "suggested_area" not in next(iter(door_sink(tmp_path).discovery_configs().values()))[
        "device"], "no area unless one is configured"


def test_event_template_keeps_every_field_and_the_alerts_own_time(tmp_path):
    """The template rendered as Home Assistant does (a sandboxed Jinja environment with its
    to_json filter); the real engine renders it in the next test and in run.sh."""
    jinja2_sandbox = pytest.importorskip("jinja2.sandbox")
    env = jinja2_sandbox.ImmutableSandboxedEnvironment()
    env.filters["to_json"] = json.dumps
    out = json.loads(env.from_string(MqttSink.EVENT_TEMPLATE).render(value_json=ALERT))
    assert out == {**ALERT, "event_type": "incorrect_mask"}


def test_discovery_with_home_assistants_own_schemas_and_templates(tmp_path):
    venv = ha_venv()
    if venv is None:
        pytest.skip("no Home Assistant venv ($HA_VENV)")
    s = door_sink(tmp_path, area="Entrance")
    given = {"configs": s.discovery_configs(), "payloads": {
        s.topic("events"): json.dumps(ALERT),
        s.topic("state"): json.dumps({"faces": 2, "unmasked": 1, "last_alert": None}),
        s.topic("stats"): json.dumps({"fps": 12.5, "cpu_temp_c": 48.3, "queued_events": 3,
                                      "dropped_events": 0, "broker": "connected"})}}
    r = subprocess.run([str(venv / "bin" / "python"),
                        str(ROOT / "tests" / "homeassistant" / "validate_discovery.py")],
                       input=json.dumps(given), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    checked = json.loads(r.stdout)
    assert all(v["error"] is None and v["dropped"] == [] for v in checked.values()), checked
    rendered = {t.split("/")[3]: v["rendered"] for t, v in checked.items()}
    assert json.loads(rendered["alert"]) == {**ALERT, "event_type": "incorrect_mask"}
    assert (rendered["unmasked"], rendered["faces"]) == ("ON", "2")
    assert (rendered["fps"], rendered["cpu_temperature"], rendered["queued_events"],
            rendered["broker"]) == ("12.5", "48.3", "3", "connected")


# --- the retained state across a real door's start, stop, kill -9 and restart ------------------
def retained_state(url: str) -> dict:
    late = Subscriber(url, ["maskdoor/door3/state"])
    assert late.wait(lambda: late.on("/state"))
    (_, payload, was_retained), = late.on("/state")[:1]
    late.close()
    assert was_retained
    return json.loads(payload)


def start_door(conf: Path) -> subprocess.Popen:
    return subprocess.Popen([EXE, "run", "--config", str(conf)],
                            env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_no_stale_unmasked_state_across_stop_kill_and_restart(broker, tmp_path):
    conf = tmp_path / "door.toml"
    conf.write_text("[camera]\nsource = 'demo'\nloop = true\nrealtime = true\n"
                    f"[mqtt]\nurl = '{broker.url}'\ndevice_id = 'door3'\n"
                    f"[service]\nstate_dir = '{tmp_path / 'state'}'\n")
    sub = Subscriber(broker.url, ["maskdoor/door3/state", "maskdoor/door3/availability",
                                  "maskdoor/door3/events"])

    def unmasked_now(since: int) -> bool:
        states = [json.loads(m[1]) for m in sub.messages[since:] if m[0].endswith("/state")]
        return bool(states) and states[-1]["unmasked"] > 0

    procs = []
    try:
        # run 1: an alert, then a clean stop while the unmasked person is in view
        procs.append(start_door(conf))
        assert sub.wait(lambda: sub.on("/events") and unmasked_now(0), timeout=120)
        alert_time = json.loads(sub.on("/events")[0][1])["time"]
        procs[-1].send_signal(signal.SIGTERM)
        assert procs[-1].wait(timeout=60) == 0
        assert retained_state(broker.url) == {"faces": 0, "unmasked": 0,
                                              "last_alert": alert_time}
        # run 2: killed while the unmasked person is in view; the will says offline, but the
        # state it last published stays retained
        mark = len(sub.messages)
        procs.append(start_door(conf))
        assert sub.wait(lambda: unmasked_now(mark), timeout=120)
        procs[-1].kill()
        procs[-1].wait(timeout=30)
        assert sub.wait(lambda: sub.messages[-1][:2] == ("maskdoor/door3/availability",
                                                         b"offline"))
        assert retained_state(broker.url)["unmasked"] > 0
        # run 3: this run's state comes before `online`
        alert_time = json.loads(sub.on("/events")[-1][1])["time"]
        mark = len(sub.messages)
        procs.append(start_door(conf))
        assert sub.wait(lambda: any(m[1] == b"online" for m in sub.messages[mark:]),
                        timeout=120)
        new = sub.messages[mark:]
        at_online = next(i for i, m in enumerate(new) if m[1] == b"online")
        states = [m for m in new[:at_online] if m[0].endswith("/state")]
        assert states, f"no state before online: {new[:at_online + 1]}"
        topic, payload, was_retained = states[-1]
        state = json.loads(payload)
        assert not was_retained and state["unmasked"] == 0 and \
            state["last_alert"] == alert_time, "the state in force when the door says online " \
            f"is this run's, with the last alert of the run before: {state}"
        procs[-1].send_signal(signal.SIGTERM)
        assert procs[-1].wait(timeout=60) == 0
        assert retained_state(broker.url)["unmasked"] == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        sub.close()


def test_against_a_real_home_assistant():
    """tests/homeassistant/run.sh: start, alert, clean stop, kill -9 and restart as a real Home
    Assistant records them (about a minute)."""
    venv = ha_venv()
    if venv is None:
        pytest.skip("no Home Assistant venv ($HA_VENV)")
    r = subprocess.run([str(ROOT / "tests" / "homeassistant" / "run.sh"), str(venv)],
                       env={**os.environ, "MASKDOOR": EXE}, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 failed" in r.stdout
