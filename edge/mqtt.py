"""Alerts for remote subscribers over MQTT (paho-mqtt 2.x), as DESIGN.md's topic table says.

Events are written to the on-disk :class:`~edge.outbox.Outbox` first and a sender thread
delivers them in order, one QoS 1 message at a time, removing each only when the broker has
acknowledged it. So a broker that is down at start-up, or goes away, never stops the door loop
and loses nothing below the queue bound; what is still queued at shutdown goes out at the next
start. Availability is retained and is also the last will. The retained state is always this
run's: it goes out before ``online``, and a clean stop clears it (nobody in view) before
``offline``; the last alert's time is kept on disk and survives restarts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

from edge import __version__
from edge.errors import MaskdoorError
from edge.outbox import Outbox

log = logging.getLogger(__name__)


class BrokerURLError(MaskdoorError, ValueError):
    """mqtt.url is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]."""


def parse_url(url: str) -> tuple[str, int, bool]:
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise BrokerURLError(f"mqtt.url = {url!r}: write mqtt://HOST:PORT (or mqtts:// for TLS)")
    tls = u.scheme == "mqtts"
    return u.hostname, u.port or (8883 if tls else 1883), tls


def default_device_id() -> str:
    return socket.gethostname().split(".")[0] or "maskdoor"


def make_client(client_id: str, mqtt_cfg=None, url: str | None = None) -> tuple[mqtt.Client, str, int]:
    """A paho client configured from ``mqtt_cfg`` (credentials, TLS); not connected yet."""
    host, port, tls = parse_url(url or mqtt_cfg.url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if mqtt_cfg is not None:
        password = mqtt_cfg.password
        if mqtt_cfg.password_file:
            with open(mqtt_cfg.password_file) as fh:
                password = fh.read().strip()
        if mqtt_cfg.username:
            client.username_pw_set(mqtt_cfg.username, password or None)
        if tls:
            client.tls_set(ca_certs=mqtt_cfg.ca_certs or None)
    elif tls:
        client.tls_set()
    client.reconnect_delay_set(1, 30)
    return client, host, port


class MqttSink:
    """Publishes events, state, stats, snapshots and Home Assistant discovery."""

    def __init__(self, mqtt_cfg, device_id: str, outbox: Outbox):
        self.cfg = mqtt_cfg
        self.device = device_id
        self.base = f"{mqtt_cfg.prefix}/{device_id}"
        self.outbox = outbox
        self.node = re.sub(r"[^a-zA-Z0-9_-]", "_", f"maskdoor_{device_id}")
        self.client, self.host, self.port = make_client(f"maskdoor-{device_id}", mqtt_cfg)
        self.client.will_set(self.topic("availability"), "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._connected = threading.Event()
        self._wake = threading.Condition()
        self._stop = threading.Event()
        # the last alert's time outlives restarts: it lies next to the event queue
        self._last_alert_file = outbox.folder.parent / "last_alert"
        self._state: dict = {"faces": 0, "unmasked": 0, "last_alert": self._read_last_alert()}
        self._state_unsent = False  # an alert changed last_alert since the last state message
        self._state_lock = threading.Lock()
        self.sent = 0
        self._down_logged = False
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)

    def topic(self, leaf: str) -> str:
        return f"{self.base}/{leaf}"

    # --- connection -------------------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._sender.start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("MQTT broker %s:%d refused the connection: %s", self.host, self.port,
                        reason_code)
            return
        log.info("MQTT connected to %s:%d as %s", self.host, self.port, self.base)
        self._down_logged = False
        if self.cfg.homeassistant:
            client.subscribe(f"{self.cfg.discovery_prefix}/status", qos=1)
            self.announce()
        # this run's state before `online`: a subscriber never sees the door online with the
        # retained state of an earlier run (one killed before it could clear it)
        self._publish_state(connecting=True)
        client.publish(self.topic("availability"), "online", qos=1, retain=True)
        self._connected.set()
        with self._wake:
            self._wake.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()
        if not self._stop.is_set() and not self._down_logged:
            log.warning("MQTT broker %s:%d unreachable (%s); events are kept in %s and sent on "
                        "reconnection", self.host, self.port, reason_code, self.outbox.folder)
            self._down_logged = True

    def _on_message(self, client, userdata, msg):
        if msg.topic == f"{self.cfg.discovery_prefix}/status" and msg.payload == b"online":
            log.info("Home Assistant is back online; announcing entities again")
            self.announce()
            self._publish_state()

    # --- Home Assistant discovery ---------------------------------------------------------------
    # Keys as Home Assistant 2024.1's MQTT schemas name them (binary_sensor, sensor, event).
    # The event entity's value template keeps every field of the alert as an attribute and adds
    # `event_type`; Home Assistant stamps the event with its arrival, so the alert's own time is
    # the `time` attribute. The state's last_alert (null before the first alert) is an attribute
    # of the state entities, not a timestamp sensor, which would log null as an invalid state.
    EVENT_TEMPLATE = "{{ dict(value_json, event_type=value_json.type) | to_json }}"

    def discovery_configs(self) -> dict[str, dict]:
        dp, node = self.cfg.discovery_prefix, self.node
        short = re.sub(r"[^a-z0-9]+", "_", self.device.lower()).strip("_") or "maskdoor"
        device = {"identifiers": [node], "name": f"maskdoor {self.device}",
                  "manufacturer": "maskdoor", "model": "door mask monitor",
                  "sw_version": __version__}
        if self.cfg.area:
            device["suggested_area"] = self.cfg.area
        common = {"availability_topic": self.topic("availability"), "device": device,
                  "origin": {"name": "maskdoor", "sw_version": __version__}, "qos": 1}
        state = {"state_topic": self.topic("state"), "json_attributes_topic": self.topic("state")}
        stats = {"state_topic": self.topic("stats"), "entity_category": "diagnostic"}

        def entity(component: str, key: str, name: str, **config) -> tuple[str, dict]:
            return (f"{dp}/{component}/{node}/{key}/config",
                    {**common, "name": name, "unique_id": f"{node}_{key}",
                     "object_id": f"{short}_{config.pop('object_id', key)}", **config})

        return dict([
            entity("binary_sensor", "unmasked", "Unmasked person at the door", **state,
                   device_class="safety",
                   value_template="{{ 'ON' if value_json.unmasked > 0 else 'OFF' }}"),
            entity("sensor", "faces", "Faces in view", **state, state_class="measurement",
                   value_template="{{ value_json.faces }}"),
            entity("event", "alert", "Mask alert", object_id="mask_alert",
                   state_topic=self.topic("events"),
                   event_types=["unmasked_face", "incorrect_mask"],
                   value_template=self.EVENT_TEMPLATE),
            entity("sensor", "fps", "Frames per second", **stats,
                   json_attributes_topic=self.topic("stats"), state_class="measurement",
                   unit_of_measurement="fps", suggested_display_precision=1,
                   value_template="{{ value_json.fps }}"),
            entity("sensor", "cpu_temperature", "CPU temperature", **stats,
                   device_class="temperature", state_class="measurement",
                   unit_of_measurement="°C", value_template="{{ value_json.get('cpu_temp_c') }}"),
            entity("sensor", "queued_events", "Alerts waiting for the broker", **stats,
                   state_class="measurement", value_template="{{ value_json.queued_events }}"),
            entity("sensor", "dropped_events", "Alerts dropped (queue full)", **stats,
                   state_class="total_increasing",
                   value_template="{{ value_json.dropped_events }}"),
            entity("sensor", "broker", "Broker link", **stats,
                   value_template="{{ value_json.get('broker', 'unknown') }}"),
        ])

    def announce(self) -> None:
        for topic, payload in self.discovery_configs().items():
            self.client.publish(topic, json.dumps(payload), qos=1, retain=True)

    # --- what the door loop calls -----------------------------------------------------------------
    def on_event(self, event, jpeg: bytes | None = None) -> None:
        self.outbox.put(json.dumps(event.to_json()).encode())
        with self._state_lock:
            self._state["last_alert"] = event.time
            self._state_unsent = True
        self._save_last_alert(event.time)
        with self._wake:
            self._wake.notify_all()
        if self.cfg.snapshot and jpeg is not None and self.connected:
            self.client.publish(self.topic("snapshot"), jpeg, qos=0)

    def on_state(self, faces: int, unmasked: int) -> None:
        with self._state_lock:
            changed = self._state_unsent or \
                (self._state["faces"], self._state["unmasked"]) != (faces, unmasked)
            self._state.update(faces=faces, unmasked=unmasked)
        if changed:
            self._publish_state()

    def on_stats(self, stats: dict) -> None:
        if self.connected:
            stats = {**stats, "queued_events": len(self.outbox),
                     "dropped_events": self.outbox.dropped}
            self.client.publish(self.topic("stats"), json.dumps(stats), qos=0)

    def _publish_state(self, connecting: bool = False) -> None:
        # only while connected (and from _on_connect): paho would keep a QoS 1 state published
        # during an outage and send it after the reconnection's fresh state and `online`
        if not (connecting or self.connected):
            return
        with self._state_lock:
            payload = json.dumps(self._state)
            self._state_unsent = False
        self.client.publish(self.topic("state"), payload, qos=1, retain=True)

    def _read_last_alert(self) -> str | None:
        try:
            return self._last_alert_file.read_text().strip() or None
        except OSError:
            return None

    def _save_last_alert(self, when: str) -> None:
        tmp = self._last_alert_file.with_name(self._last_alert_file.name + ".tmp")
        try:
            tmp.write_text(when)
            os.replace(tmp, self._last_alert_file)
        except OSError as exc:
            log.warning("cannot keep the last alert time in %s (%s); it is forgotten at the next "
                        "start", self._last_alert_file, exc.strerror)

    # --- delivery -----------------------------------------------------------------------------
    def _send_loop(self) -> None:
        current = None  # (name, MQTTMessageInfo, time published)
        while not self._stop.is_set():
            with self._wake:
                self._wake.wait_for(lambda: self._stop.is_set() or
                                    (self.connected and len(self.outbox) > 0), timeout=1.0)
            if self._stop.is_set() or not self.connected:
                continue
            item = self.outbox.peek()
            if item is None:
                continue
            name, payload = item
            if current is None or current[0] != name or time.monotonic() - current[2] > 30:
                # paho re-sends an unacknowledged QoS 1 message itself after a reconnect, so it is
                # published again here only if it seems lost for good (30 s without an ack)
                current = (name, self.client.publish(self.topic("events"), payload, qos=1),
                           time.monotonic())
            deadline = time.monotonic() + 1.0
            while not current[1].is_published() and time.monotonic() < deadline:
                time.sleep(0.01)
            if current[1].is_published():
                self.outbox.remove(name)
                self.sent += 1
                current = None

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for queued events to be delivered; True if none are left."""
        end = time.monotonic() + timeout
        while len(self.outbox) and time.monotonic() < end and self.connected:
            time.sleep(0.05)
        return len(self.outbox) == 0

    def close(self, flush_s: float = 5.0) -> None:
        """Deliver what can be delivered, publish ``offline`` (retained), disconnect."""
        if self.connected:
            self.flush(flush_s)
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self._sender.join(timeout=3)
        if self.connected:
            # nobody is at a stopped door: the retained state says so before `offline`
            with self._state_lock:
                self._state.update(faces=0, unmasked=0)
            self._publish_state()
            info = self.client.publish(self.topic("availability"), "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=3)
            except (RuntimeError, ValueError) as exc:
                log.debug("offline not confirmed: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()
        left = len(self.outbox)
        if left:
            log.warning("%d event(s) still queued in %s; they are sent at the next start", left,
                        self.outbox.folder)


class StdoutSink:
    """No broker configured: each event is one JSON line on standard output."""

    def __init__(self, stream=None):
        import sys
        self.stream = stream or sys.stdout

    def on_event(self, event, jpeg: bytes | None = None) -> None:
        self.stream.write(json.dumps(event.to_json()) + "\n")
        self.stream.flush()

    def on_state(self, faces: int, unmasked: int) -> None:
        pass

    def on_stats(self, stats: dict) -> None:
        pass

    def close(self, flush_s: float = 0.0) -> None:
        pass
