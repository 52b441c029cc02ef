"""The MQTT sink against real broker faults: restarts, a frozen broker, bad TLS and credentials.

Each test runs a real mosquitto (tests/conftest.py's Broker). The subscriber that counts events
keeps a persistent session (clean_session False) on a persistent broker, so it receives every event
the broker accepted, also those accepted while it was reconnecting. It subscribes at QoS 2, as
`maskdoor alerts` and the Home Assistant discovery do, so a copy it receives twice is a defect.
"""

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Subscriber, make_ca
from edge.errors import BrokerFileError
from edge.sinks.mqtt import MqttSink, probe_broker
from edge.sinks.outbox import Outbox
from test_mqtt import event, mqtt_cfg

EXE = str(Path(sys.executable).parent / "maskdoor")
BACKLOG = 2000
USER, PASSWORD = "door", "s3cret-pass"


def backlog_sink(broker, tmp_path, monkeypatch, n=BACKLOG, **kw):
    """A sink whose outbox already holds ``n`` events, as after a long outage."""
    outbox = Outbox(tmp_path / "outbox", n + 10)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", lambda fd: None)  # filling the queue fast; its sync is not tested
        for i in range(n):
            outbox.put(json.dumps(event(i).to_json()).encode())
    return MqttSink(mqtt_cfg(broker.url, homeassistant=False, **kw), "door1", outbox)


def tally(sub, n):
    """What the subscriber got of the events ev-0..ev-{n-1}: lost, duplicates, how many arrived
    flagged as re-sent by the broker (DUP: it had not seen the subscriber's answer to an earlier
    copy; at QoS 2 the subscriber takes such a copy once), and the ids in order of first arrival."""
    ids = [json.loads(m[1])["id"] for m in sub.on("/events")]
    unique = list(dict.fromkeys(ids))
    marked = len([m for m in sub.redelivered if m[0].endswith("/events")])
    lost = len(set(f"ev-{i}" for i in range(n)) - set(unique))
    return lost, len(ids) - len(unique), marked, unique


def count_resends(sink):
    """Count paho's own re-sends (DUP set) of event messages after a reconnection."""
    resends = []
    sink.client.on_log = lambda c, u, level, text: resends.append(1) if (
        text.startswith("Sending PUBLISH (d1") and "/events'" in text) else None
    return resends


def drained(sink, sub, n):
    return lambda: len(sink.outbox) == 0 and tally(sub, n)[0] == 0


def test_backlog_drains_through_25_broker_restarts(make_broker, tmp_path, monkeypatch):
    broker = make_broker(persistence=True)
    sub = Subscriber(broker.url, ["maskdoor/door1/events"], client_id="counter",
                     clean_session=False, qos=2)
    sink = backlog_sink(broker, tmp_path, monkeypatch)
    resends = count_resends(sink)
    t0 = time.monotonic()
    sink.start()
    restarts = 0
    for k in range(1, 26):  # restart each time another 1/26 of the backlog has been acknowledged
        assert sub.wait(lambda: sink.sent >= k * BACKLOG // 26, timeout=60), (k, sink.sent)
        broker.restart()
        restarts += 1
    assert sub.wait(drained(sink, sub, BACKLOG), timeout=120)
    time.sleep(1)  # late duplicates, if any, arrive now
    lost, dups, marked, order = tally(sub, BACKLOG)
    print(f"\n{BACKLOG} events, {restarts} broker restarts: {lost} lost, {dups} duplicates "
          f"({marked} arrived flagged as re-sent by the broker; paho re-sent {len(resends)} "
          f"events after reconnecting), {sink.published} publishes, "
          f"{time.monotonic() - t0:.1f} s")
    assert restarts == 25
    assert lost == 0
    assert order == [f"ev-{i}" for i in range(BACKLOG)]
    assert sink.published == sink.sent == BACKLOG  # the door never published an entry twice
    assert dups == 0  # QoS 2 on both legs and kept sessions: a restart mid-handshake repeats nothing
    sink.close()
    sub.close()


def test_backlog_drains_after_the_broker_froze_for_100_s(make_broker, tmp_path, monkeypatch):
    broker = make_broker()
    sub = Subscriber(broker.url, ["maskdoor/door1/events"], client_id="counter",
                     clean_session=False, qos=2)
    sink = backlog_sink(broker, tmp_path, monkeypatch)
    resends = count_resends(sink)
    sink.start()
    assert sub.wait(lambda: sink.sent >= BACKLOG // 4, timeout=60)
    broker.freeze()
    time.sleep(2)  # an ack already on its way when the broker froze is read meanwhile
    frozen_at, published = sink.sent, sink.published
    time.sleep(98)
    published_while_frozen = sink.published - published
    broker.thaw()
    thawed = time.monotonic()
    assert sub.wait(lambda: sink.connected, timeout=60)
    back_s = time.monotonic() - thawed
    assert sub.wait(drained(sink, sub, BACKLOG), timeout=180)
    drain_s = time.monotonic() - thawed
    time.sleep(1)
    lost, dups, marked, order = tally(sub, BACKLOG)
    print(f"\nfrozen after {frozen_at} events, {published_while_frozen} published while frozen; "
          f"connected {back_s:.1f} s after SIGCONT, drained {drain_s:.1f} s after")
    print(f"{BACKLOG} events, broker frozen 100 s: {lost} lost, {dups} duplicates "
          f"({marked} arrived flagged as re-sent by the broker; paho re-sent {len(resends)} "
          f"events after reconnecting), {sink.published} publishes")
    assert published_while_frozen == 0  # the one in flight is left to paho
    assert lost == 0
    assert order == [f"ev-{i}" for i in range(BACKLOG)]
    assert sink.published == sink.sent == BACKLOG  # no second PUBLISH while paho held the first
    assert dups == 0
    sink.close()
    sub.close()


# --- each broker failure: logged by a running sink, FAILed by `maskdoor check` ------------------
def tls_broker(make_broker, **kw):
    return make_broker(tls=True, users={USER: PASSWORD}, **kw)


def write_secret(tmp_path, text):
    f = tmp_path / "broker-password"
    f.write_text(text + "\n")
    return str(f)


def case_down(make_broker, tmp_path):
    b = make_broker()
    b.stop()
    return b.url, {}, ["unreachable: connection refused", "is mosquitto running"]


def case_wrong_ca(make_broker, tmp_path):
    b = tls_broker(make_broker)
    other = make_ca(tmp_path / "other-ca", "other")
    return b.url, {"username": USER, "password_file": write_secret(tmp_path, PASSWORD),
                   "ca_certs": str(other)}, ["certificate not trusted", "check mqtt.ca_certs"]


def case_hostname_mismatch(make_broker, tmp_path):
    b = tls_broker(make_broker, san="DNS:broker.example")
    return b.url, {"username": USER, "password_file": write_secret(tmp_path, PASSWORD),
                   "ca_certs": str(b.ca_file)}, ["not valid for '127.0.0.1'", "subjectAltName"]


def case_wrong_password(make_broker, tmp_path):
    b = tls_broker(make_broker)
    url = b.url.replace("://", f"://{USER}:wrong%40pass@")
    return url, {"ca_certs": str(b.ca_file)}, ["refused: not authorized",
                                               "check mqtt.username and mqtt.password"]


def case_no_credentials(make_broker, tmp_path):
    b = tls_broker(make_broker)
    return b.url, {"ca_certs": str(b.ca_file)}, ["refused: not authorized", "mqtt.username"]


def case_plain_to_tls_port(make_broker, tmp_path):
    b = tls_broker(make_broker)
    return b.url.replace("mqtts://", "mqtt://"), {"username": USER, "password": PASSWORD}, \
        ["the port speaks TLS", "write mqtts://"]


FAILURES = {"down": case_down, "wrong CA": case_wrong_ca,
            "hostname mismatch": case_hostname_mismatch, "wrong password": case_wrong_password,
            "no credentials": case_no_credentials, "plain to a TLS port": case_plain_to_tls_port}


def run_check(tmp_path, url, settings):
    conf = tmp_path / "maskdoor.toml"
    lines = ["[mqtt]", f"url = '{url}'"] + [f"{k} = '{v}'" for k, v in settings.items()]
    conf.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    t0 = time.monotonic()
    out = subprocess.run([EXE, "check", "--config", str(conf), "--source", "demo"],
                         capture_output=True, text=True, env=env, timeout=60)
    return out, time.monotonic() - t0


@pytest.mark.parametrize("failure", list(FAILURES))
def test_broker_failure_is_logged_once_and_failed_by_check(failure, make_broker, tmp_path,
                                                           caplog):
    url, settings, words = FAILURES[failure](make_broker, tmp_path)
    host_port = url.rsplit("@", 1)[-1].split("://")[-1]
    caplog.set_level(logging.WARNING, logger="edge.sinks.mqtt")
    sink = MqttSink(mqtt_cfg(url, **settings), "door1", Outbox(tmp_path / "outbox"))
    t0 = time.monotonic()
    sink.start()
    sink.on_event(event(1))

    def warned():
        return [r.getMessage() for r in caplog.records if host_port in r.getMessage()]
    deadline = t0 + 10
    while not warned() and time.monotonic() < deadline:
        time.sleep(0.02)
    first_log_s = time.monotonic() - t0
    lines = warned()
    assert lines, f"nothing logged within 10 s ({failure})"
    assert all(w in lines[0] for w in words), lines[0]
    time.sleep(3)  # paho retries meanwhile (1 s, then 2 s): the same trouble is not logged again
    assert len(warned()) == 1, warned()
    status = sink.status
    assert not status.connected and words[0] in status.error and status.since <= time.time()
    sink.close(flush_s=0)

    out, check_s = run_check(tmp_path, url, settings)
    broker_line = next(ln for ln in out.stdout.splitlines() if "broker:" in ln)
    print(f"\n{failure}: first log line after {first_log_s:.2f} s: {lines[0]}\n"
          f"  check ({check_s:.1f} s): {broker_line}")
    assert out.returncode == 1
    assert broker_line.startswith(f"FAIL  broker: {host_port} "), broker_line
    assert all(w in broker_line for w in words), broker_line
    shown = out.stdout + out.stderr
    assert not any(secret in shown for secret in ("wrong%40pass", "wrong@pass", PASSWORD))


def test_good_tls_and_password_connect_and_pass_check(make_broker, tmp_path, caplog):
    b = tls_broker(make_broker)
    settings = {"username": USER, "password_file": write_secret(tmp_path, PASSWORD),
                "ca_certs": str(b.ca_file)}
    sub = Subscriber(b.url, ["maskdoor/door1/events"], ca_file=b.ca_file, username=USER,
                     password=PASSWORD)
    caplog.set_level(logging.WARNING, logger="edge.sinks.mqtt")
    sink = MqttSink(mqtt_cfg(b.url, **settings), "door1", Outbox(tmp_path / "outbox"))
    sink.start()
    sink.on_event(event(7))
    assert sub.wait(lambda: len(sub.on("/events")) == 1)
    assert sink.status.connected and sink.status.error is None
    assert not caplog.records
    sink.close()
    sub.close()
    out, _ = run_check(tmp_path, b.url, settings)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"PASS  broker: 127.0.0.1:{b.port} accepted the connection (TLS, user door)" \
        in out.stdout


def test_unreadable_password_file_or_ca_is_one_clear_error(tmp_path):
    missing = str(tmp_path / "missing")
    cfg = mqtt_cfg("mqtts://127.0.0.1:8883", username=USER, password_file=missing)
    with pytest.raises(BrokerFileError, match=f"mqtt.password_file = '{missing}' cannot be read "
                       r"\(No such file or directory\); write the path"):
        MqttSink(cfg, "door1", Outbox(tmp_path / "outbox"))
    ok, detail = probe_broker(cfg)
    assert not ok and detail.startswith(f"mqtt.password_file = '{missing}' cannot be read")
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    cfg = mqtt_cfg("mqtts://127.0.0.1:8883", ca_certs=str(tmp_path / "ca.pem"))
    with pytest.raises(BrokerFileError, match="mqtt.ca_certs = .* cannot be read as a CA bundle"):
        MqttSink(cfg, "door1", Outbox(tmp_path / "outbox"))
    ok, detail = probe_broker(cfg)
    assert not ok and "mqtt.ca_certs" in detail and "PEM file" in detail
