"""The MQTT sink against a real mosquitto broker started on a free loopback port."""

import json
import time
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest

from conftest import Subscriber
from edge import config
from edge.errors import BrokerURLError
from edge.sinks.mqtt import MqttSink, make_client, parse_url, redact_url
from edge.sinks.outbox import Outbox
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
    assert parse_url("mqtt://[::1]:1883") == ("::1", 1883, False)
    assert parse_url("mqtts://door:p%40ss@broker.lan:8883/") == ("broker.lan", 8883, True)


@pytest.mark.parametrize("url, problem, fix", [
    ("mqtt://h:99999", "the port is not in 1-65535", "write a port from 1 to 65535"),
    ("mqtt://h:0", "the port is not in 1-65535", "write a port from 1 to 65535"),
    ("mqtt://h:abc", "the port is not a number", "write mqtt://HOST:PORT"),
    ("mqtt://::1:1883", "an IPv6 address needs [brackets]", "mqtt://[::1]:1883"),
    ("mqtt://[::1:1883", "bad IPv6 address", "mqtt://[::1]:1883"),
    ("mqtt://::1]:1883", "bad IPv6 address", "mqtt://[::1]:1883"),
    ("mqtt://[broker]:1883", "bad IPv6 address", "mqtt://[::1]:1883"),
    ("mqtt://bro ker:1883", "contains a space", "remove it"),
    (" mqtt://broker:1883", "contains a space", "remove it"),
    ("http://broker:1883", "the scheme 'http://' is not MQTT", "write mqtt://HOST:PORT"),
    ("mqtt://:1883", "no host", "write mqtt://HOST:PORT"),
    ("mqtt://", "no host", "write mqtt://HOST:PORT"),
    ("", "empty", "write mqtt://HOST:PORT"),
    ("mqtt://broker:1883/door", "unexpected /door", "a broker URL has no path"),
    ("mqtt://" + "a" * 64 + ".lan", "is not a valid host name", "write mqtt://HOST:PORT"),
])
def test_bad_url_names_the_url_the_problem_and_the_fix(url, problem, fix):
    with pytest.raises(BrokerURLError) as err:
        parse_url(url)
    assert isinstance(err.value, ValueError)
    text = str(err.value)
    assert text.startswith(f"mqtt.url = {url!r}: ") and problem in text and fix in text


def test_a_bad_url_never_shows_its_password():
    with pytest.raises(BrokerURLError) as err:
        parse_url("mqtt://door:hunter2@broker:99999")
    assert "hunter2" not in str(err.value) and "mqtt://door:***@broker:99999" in str(err.value)
    assert redact_url("mqtts://door:a@b@broker/") == "mqtts://door:***@broker/"
    assert redact_url("mqtt://broker:1883") == "mqtt://broker:1883"
    with pytest.raises(BrokerURLError) as err:
        parse_url("door:hunter2@broker:abc")
    assert "hunter2" not in str(err.value) and "door:***@broker:abc" in str(err.value)


def test_credentials_in_the_url_are_used(make_broker, tmp_path):
    b = make_broker(users={"door": "p@ss word"})
    url = b.url.replace("://", "://door:p%40ss%20word@")
    sub = Subscriber(b.url, ["maskdoor/door1/events"], username="door", password="p@ss word")
    s = sink(url, tmp_path)
    s.on_event(event(3))
    assert sub.wait(lambda: [e["id"] for e in events_of(sub)] == ["ev-3"])
    s.close()
    sub.close()
    with pytest.raises(BrokerURLError, match="names a user and so does mqtt.username; keep one"):
        make_client("x", mqtt_cfg(url, username="door"))


def test_status_and_stats_say_how_the_broker_is(broker, tmp_path):
    sub = Subscriber(broker.url, ["maskdoor/door1/stats"])
    before = time.time()
    s = sink(broker.url, tmp_path)
    assert sub.wait(lambda: s.connected)
    assert s.status.connected and s.status.error is None and s.status.since >= before
    s.on_stats({"fps": 5.0})
    assert sub.wait(lambda: sub.on("/stats"))
    assert json.loads(sub.on("/stats")[0][1]) == {"fps": 5.0, "broker": "connected",
                                                  "queued_events": 0, "dropped_events": 0}
    sub.close()
    broker.stop()
    assert sub.wait(lambda: not s.status.connected)
    assert s.status.error.startswith("connection lost") and str(s.status) == s.status.error
    s.close(flush_s=0)


def test_state_changes_while_the_broker_is_away_send_only_the_latest(make_broker, tmp_path):
    b = make_broker(persistence=True)
    sub = Subscriber(b.url, ["maskdoor/door1/state"], client_id="state-counter",
                     clean_session=False)
    s = sink(b.url, tmp_path)
    s.on_state(1, 0)
    assert sub.wait(lambda: any(json.loads(m[1])["faces"] == 1 for m in sub.on("/state")))
    b.stop()
    assert sub.wait(lambda: not s.connected)
    seen = len(sub.on("/state"))
    end, calls = time.monotonic() + 10, 0
    while time.monotonic() < end:  # 10 s away, the door loop reporting changes all along
        s.on_state(calls % 7, calls % 3)
        calls += 1
        time.sleep(0.01)
    s.on_state(3, 1)
    b.start()
    assert sub.wait(lambda: [m for m in sub.on("/state")[seen:] if not m[2]], timeout=20)
    time.sleep(2)  # anything queued would follow at once
    live = [json.loads(m[1]) for m in sub.on("/state")[seen:] if not m[2]]
    print(f"\n{calls} state changes in 10 s away: {len(live)} state message(s) sent on return")
    assert live == [{"faces": 3, "unmasked": 1, "last_alert": None}]
    s.close()
    sub.close()


def test_sender_survives_a_publish_into_a_connection_that_just_dropped(make_broker, tmp_path):
    """The door thinks it is connected while paho already lost the connection: the publish
    answers 'not connected'. paho still holds that message and sends it on reconnection."""
    b = make_broker(persistence=True)
    sub = Subscriber(b.url, ["maskdoor/door1/events"], client_id="race", clean_session=False)
    s = sink(b.url, tmp_path)
    assert sub.wait(lambda: s.connected)
    answers, publish = [], s.client.publish

    def recorded(topic, *args, **kw):
        info = publish(topic, *args, **kw)
        if topic.endswith("/events"):
            answers.append(info.rc)
        return info
    s.client.publish = recorded
    tell_sink = s.client.on_disconnect

    def late(*args):  # widen the instant between the drop and the sink hearing of it
        time.sleep(3)
        tell_sink(*args)
    s.client.on_disconnect = late
    b.stop()
    for i in range(5):
        s.on_event(event(i))
    time.sleep(1)
    assert answers[:1] == [mqtt.MQTT_ERR_NO_CONN]
    b.start()
    assert sub.wait(lambda: len({e["id"] for e in events_of(sub)}) == 5, timeout=30)
    assert [e["id"] for e in events_of(sub)] == [f"ev-{i}" for i in range(5)]
    assert s._sender.is_alive() and s.published == 5
    s.close()
    sub.close()


def test_sender_logs_any_paho_error_once_and_keeps_delivering(broker, tmp_path, caplog):
    sub = Subscriber(broker.url, ["maskdoor/door1/events"])
    s = sink(broker.url, tmp_path)
    publish, failures = s.client.publish, [OSError("socket gone"), OSError("socket gone"),
                                           RuntimeError("paho bug")]

    def flaky(topic, *args, **kw):
        if topic.endswith("/events") and failures:
            raise failures.pop(0)
        return publish(topic, *args, **kw)
    s.client.publish = flaky
    s.on_event(event(1))
    s.on_event(event(2))
    assert sub.wait(lambda: len(events_of(sub)) == 2, timeout=15)
    assert [e["id"] for e in events_of(sub)] == ["ev-1", "ev-2"]
    logged = [r.getMessage() for r in caplog.records if "event delivery" in r.getMessage()]
    assert len(logged) == 2 and "socket gone" in logged[0] and "paho bug" in logged[1]


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


@pytest.mark.parametrize("qos", [2, 1])
def test_events_go_out_at_the_configured_qos(broker, tmp_path, qos):
    """Events at mqtt.qos (2, exactly once, unless a broker lacks it); the alert entity of Home
    Assistant subscribes at the same QoS, every other entity at 1."""
    s = sink(broker.url, tmp_path, qos=qos)
    sub = Subscriber(broker.url, ["homeassistant/#", "maskdoor/door1/events"], qos=2)
    assert sub.wait(lambda: len(sub.on("/config")) == len(s.discovery_configs()))
    asked = {m[0].split("/")[-2]: json.loads(m[1])["qos"] for m in sub.on("/config")}
    assert asked.pop("alert") == qos
    assert set(asked.values()) == {1}
    s.on_event(event(1))
    assert sub.wait(lambda: sub.on("/events"))
    assert [q for t, q in sub.qos if t.endswith("/events")] == [qos]
    s.close()
    sub.close()
