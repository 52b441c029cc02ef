"""The MQTT sink against a real mosquitto broker started on a free loopback port."""

import json
import time
from types import SimpleNamespace

import pytest

from conftest import Subscriber
from edge import config
from edge.mqtt import BrokerURLError, MqttSink, parse_url
from edge.outbox import Outbox
from edge.types import Event

FIELDS = {"id", "time", "device", "type", "label", "label_score", "score", "box",
          "face_width_frac", "track_id"}


def mqtt_cfg(url, **kw):
    return SimpleNamespace(**{**vars(config.load(None).mqtt), "url": url, **kw})


def event(n: int) -> Event:
    return Event(id=f"ev-{n}", time="2026-11-22T05:00:00.000Z", device="door1",
                 type="unmasked_face", label="without_mask", label_score=0.97, score=0.99,
                 box=(10.0, 20.0, 110.0, 140.0), face_width_frac=0.156, track_id=n)


def sink(url, tmp_path, **kw):
    s = MqttSink(mqtt_cfg(url, **kw), "door1", Outbox(tmp_path / "outbox", 100))
    s.start()
    return s


def events_of(sub):
    return [json.loads(m[1]) for m in sub.on("/events")]


def test_event_state_availability_and_discovery(broker, tmp_path):
    sub = Subscriber(broker.url, ["maskdoor/#", "homeassistant/#"])
    s = sink(broker.url, tmp_path)
    assert sub.wait(lambda: sub.on("/availability"))
    s.on_event(event(1))
    s.on_state(2, 1)
    assert sub.wait(lambda: len(events_of(sub)) == 1)
    (ev,) = events_of(sub)
    assert set(ev) == FIELDS and ev["id"] == "ev-1" and ev["type"] == "unmasked_face"
    assert sub.wait(lambda: any(json.loads(m[1])["unmasked"] == 1 for m in sub.on("/state")))
    s.close()
    sub.close()
    # a late subscriber gets the retained topics: offline availability, state, discovery
    late = Subscriber(broker.url, ["maskdoor/#", "homeassistant/#"])
    n = len(s.discovery_configs())
    assert late.wait(lambda: len(late.on("/config")) == n)
    assert late.on("maskdoor/door1/availability") == [("maskdoor/door1/availability", b"offline", True)]
    # nobody is at a stopped door: a clean stop clears the retained state
    assert json.loads(late.on("/state")[0][1]) == {"faces": 0, "unmasked": 0,
                                                   "last_alert": "2026-11-22T05:00:00.000Z"}
    configs = {m[0]: json.loads(m[1]) for m in late.on("/config")}
    assert all(m[2] for m in late.on("/config")), "discovery configs must be retained"
    kinds = {t.split("/")[1] for t in configs}
    assert kinds == {"binary_sensor", "sensor", "event"}
    ev_cfg = next(c for t, c in configs.items() if "/event/" in t)
    assert ev_cfg["state_topic"] == "maskdoor/door1/events"
    assert ev_cfg["event_types"] == ["unmasked_face", "incorrect_mask"]
    assert all(c["availability_topic"] == "maskdoor/door1/availability" for c in configs.values())
    late.close()


def test_reannounce_when_home_assistant_comes_back(broker, tmp_path):
    s = sink(broker.url, tmp_path)
    n = len(s.discovery_configs())
    sub = Subscriber(broker.url, ["homeassistant/+/+/+/config"])
    assert sub.wait(lambda: len(sub.messages) == n)
    sub.client.publish("homeassistant/status", "online")
    assert sub.wait(lambda: len(sub.messages) == 2 * n)
    s.close()
    sub.close()


def test_broker_down_at_start_then_up_delivers_in_order(broker, tmp_path):
    broker.stop()
    s = sink(broker.url, tmp_path)
    for i in range(5):
        s.on_event(event(i))  # must not block or raise
    assert len(s.outbox) == 5
    broker.start()
    sub = Subscriber(broker.url, ["maskdoor/door1/events"])
    assert sub.wait(lambda: len(events_of(sub)) == 5, timeout=20)
    assert [e["id"] for e in events_of(sub)] == [f"ev-{i}" for i in range(5)]
    s.close()
    sub.close()


def test_broker_restart_mid_run_loses_nothing(broker, tmp_path):
    s = sink(broker.url, tmp_path)
    sub = Subscriber(broker.url, ["maskdoor/door1/events"])
    s.on_event(event(0))
    assert sub.wait(lambda: len(events_of(sub)) == 1)
    sub.close()
    broker.stop()
    for i in range(1, 8):
        s.on_event(event(i))
        time.sleep(0.05)
    broker.start()
    sub = Subscriber(broker.url, ["maskdoor/door1/events"])
    assert sub.wait(lambda: len({e["id"] for e in events_of(sub)}) == 7, timeout=30)
    ids = [e["id"] for e in events_of(sub)]
    assert sorted(set(ids), key=ids.index) == [f"ev-{i}" for i in range(1, 8)]
    assert s.flush(5) and len(s.outbox) == 0
    s.close()
    sub.close()


def test_events_queued_at_stop_are_sent_by_the_next_start(broker, tmp_path):
    broker.stop()
    s = sink(broker.url, tmp_path)
    s.on_event(event(42))
    s.close(flush_s=0.5)
    assert len(Outbox(tmp_path / "outbox")) == 1
    broker.start()
    sub = Subscriber(broker.url, ["maskdoor/door1/events"])
    s2 = sink(broker.url, tmp_path)
    assert sub.wait(lambda: [e["id"] for e in events_of(sub)] == ["ev-42"], timeout=20)
    s2.close()
    sub.close()


def test_bad_url_is_named():
    with pytest.raises(BrokerURLError, match="write mqtt://HOST:PORT"):
        parse_url("http://example:80")
    assert parse_url("mqtts://h") == ("h", 8883, True)
    assert parse_url("h:1884") == ("h", 1884, False)


def test_a_clean_stop_clears_the_state_before_offline(broker, tmp_path):
    s = sink(broker.url, tmp_path)
    sub = Subscriber(broker.url, ["maskdoor/door1/state", "maskdoor/door1/availability"])
    assert sub.wait(lambda: sub.on("/availability"))
    s.on_state(2, 1)
    assert sub.wait(lambda: json.loads(sub.on("/state")[-1][1])["unmasked"] == 1)
    s.close()
    assert sub.wait(lambda: sub.messages[-1][1] == b"offline")
    (t1, p1, _), (t2, p2, _) = sub.messages[-2:]
    assert t1.endswith("/state") and json.loads(p1)["unmasked"] == 0 and json.loads(p1)["faces"] == 0
    assert (t2, p2) == ("maskdoor/door1/availability", b"offline")
    sub.close()


def test_last_alert_is_published_at_once_and_kept_across_restarts(broker, tmp_path):
    s = sink(broker.url, tmp_path)
    sub = Subscriber(broker.url, ["maskdoor/door1/state"])
    s.on_state(1, 1)
    s.on_event(event(7))
    s.on_state(1, 1)  # the same counts: the state still goes out, with the new last alert
    assert sub.wait(lambda: json.loads(sub.on("/state")[-1][1])["last_alert"] ==
                    "2026-11-22T05:00:00.000Z")
    s.close()
    sub.close()
    sub = Subscriber(broker.url, ["maskdoor/door1/state", "maskdoor/door1/availability"])
    s2 = sink(broker.url, tmp_path)
    assert sub.wait(lambda: sub.on("/availability")[-1][1] == b"online")
    live = [json.loads(m[1]) for m in sub.on("/state") if not m[2]]
    assert live[-1] == {"faces": 0, "unmasked": 0, "last_alert": "2026-11-22T05:00:00.000Z"}
    s2.close()
    sub.close()


def test_discovery_asks_for_qos_1(broker, tmp_path):
    s = sink(broker.url, tmp_path)
    sub = Subscriber(broker.url, ["homeassistant/#"])
    assert sub.wait(lambda: len(sub.on("/config")) == len(s.discovery_configs()))
    assert all(json.loads(m[1])["qos"] == 1 for m in sub.on("/config"))
    s.close()
    sub.close()
