"""Alerts for remote subscribers over MQTT (paho-mqtt 2.x), as DESIGN.md's topic table says.

Events are written to the on-disk :class:`~edge.sinks.outbox.Outbox` first and a sender thread
delivers them in order, one message at a time (QoS ``mqtt.qos``, 2 by default), removing each only
when the broker has acknowledged it. So a broker that is down at start-up, goes away or hangs never
stops the door loop and loses nothing below the queue bound; what is still queued at shutdown goes
out at the next start. Availability is retained and is also the last will.

paho keeps every QoS 1 or 2 message it accepted (also one published while disconnected) until the
broker acknowledges it, and resumes it by itself after each reconnection. So the sender publishes
an outbox entry once and then only waits; it publishes the entry again only when paho did not
accept it. With QoS 2 and the door's state kept by the broker (clean_session off), a broker
restarted in the middle of a handshake neither loses the event nor passes it on twice: it holds
an incoming event until the door releases it (PUBREL), and a re-sent PUBLISH carries the same id.
State and stats are QoS 0 and sent only while connected: paho drops QoS 0 messages it cannot send,
so nothing stale piles up while the broker is away, and the latest state is published on each
(re)connection.
The retained state is always this run's: it goes out before ``online``, and a clean stop clears it
(nobody in view) before ``offline``; the last alert's time is kept on disk and survives restarts.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt

from edge import __version__
from edge.errors import BrokerFileError, BrokerURLError, MaskdoorError
from edge.sinks import Sink
from edge.sinks.outbox import Outbox

log = logging.getLogger(__name__)

URL_FORM = "write mqtt://HOST:PORT (or mqtts://HOST:PORT for TLS; IPv6 as mqtt://[::1]:1883)"


def redact_url(url: str) -> str:
    """``url`` with the password of ``user:password@`` replaced by ``***``."""
    return re.sub(r"^((?:[^/]*//)?[^/@:]*:)[^/]*@", r"\1***@", url)


def _split_url(url: str):
    """(host, port, tls, user, password) of a broker URL; the user and password URL-decoded."""
    shown = redact_url(url) if isinstance(url, str) else url

    def bad(problem: str, fix: str = URL_FORM) -> BrokerURLError:
        return BrokerURLError(f"mqtt.url = {shown!r}: {problem}; {fix}")

    if not isinstance(url, str) or not url:
        raise bad("empty")
    if any(ch.isspace() for ch in url):
        raise bad("contains a space", "remove it")
    if "://" in url:
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ("mqtt", "mqtts"):
            raise bad(f"the scheme {scheme + '://'!r} is not MQTT")
    else:
        url = f"mqtt://{url}"
    try:
        u = urlparse(url)
        port = u.port
    except ValueError as exc:
        text = str(exc)
        if "IPv6" in text or "IPv4" in text:
            raise bad(f"bad IPv6 address ({text})") from None
        if "out of range" in text:
            raise bad("the port is not in 1-65535", "write a port from 1 to 65535") from None
        raise bad("the port is not a number (an IPv6 address needs [brackets])") from None
    host = u.hostname
    if not host:
        raise bad("no host")
    if port == 0:
        raise bad("the port is not in 1-65535", "write a port from 1 to 65535")
    if u.path not in ("", "/") or u.query or u.fragment or u.params:
        raise bad(f"unexpected {u.path or '?' + u.query}", "remove it: a broker URL has no path")
    if "[" in u.netloc:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
    else:
        try:
            host.encode("idna")
        except UnicodeError:
            raise bad(f"{host!r} is not a valid host name") from None
    tls = u.scheme == "mqtts"
    user = unquote(u.username) if u.username else None
    password = unquote(u.password) if u.password is not None else None
    return host, port or (8883 if tls else 1883), tls, user, password


def parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` (a bare HOST:PORT
    means mqtt://); raises :class:`BrokerURLError` naming the URL (password hidden) and the fix."""
    return _split_url(url)[:3]


def _credentials(mqtt_cfg, url: str) -> tuple[str | None, str | None]:
    """(user, password): mqtt.username wins; else ``user:password@`` of mqtt.url (URL-decoded).
    The password comes from the URL, else mqtt.password_file, else mqtt.password."""
    url_user, url_password = _split_url(url)[3:]
    user = password = None
    if mqtt_cfg is not None:
        if mqtt_cfg.username and url_user:
            raise BrokerURLError(f"mqtt.url = {redact_url(url)!r} names a user and so does "
                                 "mqtt.username; keep one of them")
        user = mqtt_cfg.username or url_user
        password = mqtt_cfg.password or None
        if mqtt_cfg.password_file:
            try:
                with open(mqtt_cfg.password_file) as fh:
                    password = fh.read().strip()
            except (OSError, UnicodeError) as exc:
                raise BrokerFileError(
                    f"mqtt.password_file = {mqtt_cfg.password_file!r} cannot be read "
                    f"({getattr(exc, 'strerror', None) or exc}); write the path of a file this "
                    "service can read, holding the broker password") from None
    else:
        user = url_user
    if url_user and url_password is not None:
        password = url_password
    return user or None, password if user else None


def make_client(client_id: str, mqtt_cfg=None, url: str | None = None,
                clean_session: bool = True) -> tuple[mqtt.Client, str, int]:
    """A paho client configured from ``mqtt_cfg`` (credentials, TLS); not connected yet."""
    url = url or mqtt_cfg.url
    host, port, tls = parse_url(url)
    user, password = _credentials(mqtt_cfg, url)
    # clean_session=False: the broker keeps the subscriptions, queued messages and unfinished
    # QoS 2 handshakes of this client id across reconnections
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean_session)
    if user:
        client.username_pw_set(user, password)
    ca_certs = getattr(mqtt_cfg, "ca_certs", "") or None
    if tls:
        try:
            client.tls_set(ca_certs=ca_certs)
        except (OSError, ValueError) as exc:
            raise BrokerFileError(f"mqtt.ca_certs = {ca_certs!r} cannot be read as a CA "
                                  f"bundle ({getattr(exc, 'strerror', None) or exc}); write the "
                                  "path of the PEM file of the CA that signed the broker's "
                                  "certificate") from None
    elif ca_certs:
        log.warning("mqtt.ca_certs is set but mqtt.url %s is not TLS; write mqtts:// to use it",
                    redact_url(url))
    client.reconnect_delay_set(1, 30)
    return client, host, port


# --- why a connection failed, and what to do ------------------------------------------------------
NOT_AUTHORISED = {"Not authorized", "Bad user name or password"}


def explain_error(exc: BaseException, tls: bool, port: int, has_ca: bool) -> tuple[str, str]:
    """(reason, fix) for an exception raised while connecting."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = (exc.verify_message or str(exc)).rstrip(".")
        if exc.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH
            return (f"TLS: {detail}", "write in mqtt.url a host name that the broker's "
                    "certificate lists, or reissue it with this name in its subjectAltName")
        if exc.verify_code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return f"TLS: {detail}", "renew the broker's certificate (or check this clock)"
        fix = ("check mqtt.ca_certs: it must be the CA that signed the broker's certificate"
               if has_ca else "set mqtt.ca_certs to the CA that signed the broker's "
               "certificate (the system's CAs do not trust it)")
        return f"TLS: certificate not trusted ({detail})", fix
    if tls and isinstance(exc, (ssl.SSLError, ConnectionResetError)):
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        return (f"TLS handshake failed ({reason})",
                "does the port speak TLS? for a plain listener write mqtt://")
    if isinstance(exc, ConnectionRefusedError):
        return ("unreachable: connection refused",
                f"is mosquitto running and listening on port {port}?")
    if isinstance(exc, socket.gaierror):
        return f"unreachable: host name not found ({exc.strerror})", "check the host in mqtt.url"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return ("unreachable: no answer", "is the broker running, and does the network (or a "
                f"firewall) let port {port} through?")
    if isinstance(exc, OSError):
        return (f"unreachable: {exc.strerror or exc}",
                "check the network and the host in mqtt.url")
    return f"connection failed: {exc!r}", "check mqtt.url"


def explain_refusal(reason_code) -> tuple[str, str]:
    """(reason, fix) for a CONNACK that refused the connection."""
    name = str(reason_code)
    if name in NOT_AUTHORISED:
        return f"refused: {name.lower()}", ("check mqtt.username and mqtt.password (or "
                                            "mqtt.password_file) against the broker's users")
    if name == "Client identifier not valid":
        return f"refused: {name.lower()}", ("set mqtt.device_id to letters and digits (the "
                                            "client id is maskdoor-<device_id>)")
    return f"refused: {name}", "see the broker's log for why"


def speaks_tls(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` completes a TLS handshake (certificate not checked)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host):
                return True
    except (OSError, ValueError):
        return False


def explain_silent_close(host: str, port: int, tls: bool) -> tuple[str, str]:
    """(reason, fix) when the broker closed the connection without answering CONNECT."""
    if not tls and speaks_tls(host, port):
        return ("closed the connection without answering: the port speaks TLS",
                "write mqtts:// in mqtt.url (and set mqtt.ca_certs)")
    return ("closed the connection without answering",
            "is this an MQTT port? see the broker's log for why")


@dataclass(frozen=True)
class BrokerStatus:
    """The link to the broker as last seen: ``connected``; ``error`` (what went wrong last, None
    while connected); ``since`` (time.time() when it became so); ``fix`` (what to do about the
    error, "" while connected)."""
    connected: bool
    error: str | None
    since: float
    fix: str = ""

    def __str__(self) -> str:
        if self.connected:
            return "connected"
        return self.error or "connecting"


def _guarded(callback):
    """paho stops its network thread when a callback raises: log instead, once per kind."""
    def run(self, *args):
        try:
            callback(self, *args)
        except Exception as exc:  # principle: the broker link must outlive any bug here
            self._log_once(f"{callback.__name__}:{type(exc).__name__}",
                           "MQTT %s failed: %r; carrying on", callback.__name__, exc)
    run.__name__ = callback.__name__
    return run


@dataclass
class _InFlight:
    name: str  # the outbox entry
    mid: int
    acks_before: int  # the ack counter just before it was published


class MqttSink(Sink):
    """Publishes events, state, stats, snapshots and Home Assistant discovery."""

    def __init__(self, mqtt_cfg, device_id: str, outbox: Outbox):
        self.cfg = mqtt_cfg
        self.device = device_id
        self.base = f"{mqtt_cfg.prefix}/{device_id}"
        self.outbox = outbox
        self.node = re.sub(r"[^a-zA-Z0-9_-]", "_", f"maskdoor_{device_id}")
        self.client, self.host, self.port = make_client(f"maskdoor-{device_id}", mqtt_cfg,
                                                        clean_session=False)
        self.tls = parse_url(mqtt_cfg.url)[2]
        self.client.will_set(self.topic("availability"), "offline", qos=1, retain=True)
        self.client.on_pre_connect = self._on_pre_connect
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self._connected = threading.Event()
        self._wake = threading.Condition()
        self._stop = threading.Event()
        # the last alert's time outlives restarts: it lies next to the event queue
        self._last_alert_file = outbox.folder.parent / "last_alert"
        self._state: dict = {"faces": 0, "unmasked": 0, "last_alert": self._read_last_alert()}
        self._state_unsent = False  # an alert changed last_alert since the last state message
        self._state_lock = threading.Lock()
        self._acks = threading.Condition()
        self._ack_count = 0
        self._acked_at: dict[int, int] = {}  # mid -> value of the ack counter at its ack
        self._status = BrokerStatus(False, None, time.time())
        self._status_lock = threading.Lock()
        self._answered = False  # this connection attempt got a CONNACK
        self._reported: set[str] = set()  # reasons logged during the current outage
        self._trouble_since: float | None = None
        self._logged_once: set[str] = set()
        self.sent = 0
        self.published = 0  # event PUBLISH calls: equal to ``sent`` unless paho refused one
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)

    def topic(self, leaf: str) -> str:
        return f"{self.base}/{leaf}"

    def _log_once(self, kind: str, fmt: str, *args) -> None:
        if kind not in self._logged_once:
            self._logged_once.add(kind)
            log.error(fmt, *args)

    # --- connection -------------------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._sender.start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def status(self) -> BrokerStatus:
        """Read-only view of the broker link, for the stats and for anything else that asks."""
        with self._status_lock:
            return self._status

    def _trouble(self, reason: str, fix: str) -> None:
        """Record what is wrong; log each distinct reason once per outage, naming the fix."""
        with self._status_lock:
            now = time.time()
            if self._trouble_since is None:
                self._trouble_since = time.monotonic()
                self._status = BrokerStatus(False, reason, now, fix)
            else:
                self._status = BrokerStatus(False, reason, self._status.since, fix)
            first = reason not in self._reported
            self._reported.add(reason)
        if first and not self._stop.is_set():
            log.warning("MQTT broker %s:%d %s; %s (events are kept in %s and sent when it is "
                        "back)", self.host, self.port, reason, fix, self.outbox.folder)

    @_guarded
    def _on_pre_connect(self, client, userdata):
        self._answered = False

    @_guarded
    def _on_connect_fail(self, client, userdata):
        # paho calls this from inside its `except OSError:` around the connection attempt
        exc = sys.exc_info()[1]
        if exc is None:
            self._trouble("unreachable", "is the broker running?")
        else:
            self._trouble(*explain_error(exc, self.tls, self.port, bool(self.cfg.ca_certs)))

    @_guarded
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self._answered = True
        if reason_code.is_failure:
            self._trouble(*explain_refusal(reason_code))
            return
        with self._status_lock:
            self._status = BrokerStatus(True, None, time.time())
            down_s = time.monotonic() - self._trouble_since if self._trouble_since else None
            self._trouble_since = None
            self._reported.clear()
        if down_s is None:
            log.info("MQTT connected to %s:%d as %s", self.host, self.port, self.base)
        else:
            log.warning("MQTT broker %s:%d connected again after %.1f s, %d event(s) queued",
                        self.host, self.port, down_s, len(self.outbox))
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

    @_guarded
    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._stop.is_set():
            return
        hung = str(reason_code) == "Keep alive timeout"
        if was_connected and hung:
            self._trouble(f"stopped answering (nothing within mqtt.keepalive_s = "
                          f"{self.cfg.keepalive_s} s)", "is the broker hung? reconnecting")
        elif was_connected:
            self._trouble(f"connection lost ({reason_code})", "reconnecting")
        elif not self._answered:
            if hung:
                self._trouble("did not answer CONNECT", "is the broker hung? see its log")
            else:
                self._trouble(*explain_silent_close(self.host, self.port, self.tls))
        # a CONNACK that refused was reported by _on_connect

    @_guarded
    def _on_message(self, client, userdata, msg):
        if msg.topic == f"{self.cfg.discovery_prefix}/status" and msg.payload == b"online":
            log.info("Home Assistant is back online; announcing entities again")
            self.announce()
            self._publish_state()

    @_guarded
    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._acks:
            self._ack_count += 1
            self._acked_at[mid] = self._ack_count
            self._acks.notify_all()

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
                   value_template=self.EVENT_TEMPLATE, qos=self.cfg.qos),
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
            stats = {**stats, "broker": str(self.status), "queued_events": len(self.outbox),
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
        flight = None
        while not self._stop.is_set():
            try:
                flight = self._deliver(flight)
            except Exception as exc:  # principle: nothing paho raises may stop the deliveries
                self._log_once(f"send:{type(exc).__name__}", "MQTT event delivery: %r; retrying "
                               "(events are kept in %s)", exc, self.outbox.folder)
                flight = None
                self._stop.wait(0.5)

    def _deliver(self, flight: _InFlight | None) -> _InFlight | None:
        """One step: publish the oldest queued event, or wait for the broker's ack of the one in
        flight (paho re-sends it by itself after a reconnection) and then drop it from the queue."""
        return self._publish_oldest() if flight is None else self._await_ack(flight)

    def _publish_oldest(self) -> _InFlight | None:
        with self._wake:
            self._wake.wait_for(lambda: self._stop.is_set() or
                                (self.connected and len(self.outbox) > 0), timeout=1.0)
        if self._stop.is_set() or not self.connected:
            return None
        item = self.outbox.peek()
        if item is None:
            return None
        name, payload = item
        with self._acks:
            before = self._ack_count
        info = self.client.publish(self.topic("events"), payload, qos=self.cfg.qos)
        self.published += 1
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # not queued by paho (the only case where it drops a QoS 1/2 message): publish again
            raise RuntimeError(f"paho did not take the event: {mqtt.error_string(info.rc)}")
        return _InFlight(name, info.mid, before)

    def _await_ack(self, flight: _InFlight) -> _InFlight | None:
        def acked() -> bool:
            return self._acked_at.get(flight.mid, 0) > flight.acks_before

        with self._acks:
            self._acks.wait_for(lambda: self._stop.is_set() or acked(), timeout=1.0)
            if not acked():
                return flight
        self.outbox.remove(flight.name)
        self.sent += 1
        return None

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
        with self._acks:
            self._acks.notify_all()
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
        left, lost = len(self.outbox), self.outbox.in_memory
        if left > lost:
            log.warning("%d event(s) still queued in %s; they are sent at the next start",
                        left - lost, self.outbox.folder)
        if lost:
            log.error("%d event(s) held in memory because %s could not be written are lost",
                      lost, self.outbox.folder)


def probe_broker(mqtt_cfg, timeout: float = 5.0) -> tuple[bool, str]:
    """Connect once as ``maskdoor check`` does: TCP, TLS and CONNECT with the configured
    credentials. (ok, what happened): 'HOST:PORT accepted the connection (TLS, user door)' or
    'HOST:PORT <reason>; <fix>'. Never shows a password."""
    try:
        client, host, port = make_client(f"maskdoor-check-{os.getpid()}", mqtt_cfg)
        _, _, tls = parse_url(mqtt_cfg.url)
        user, _ = _credentials(mqtt_cfg, mqtt_cfg.url)
    except MaskdoorError as exc:
        return False, str(exc)
    where = f"{host}:{port}"
    client.connect_timeout = timeout
    answer: list = []
    client.on_connect = lambda c, u, flags, reason_code, props: answer.append(reason_code)
    try:
        client.connect(host, port, keepalive=max(5, int(timeout)))
    except Exception as exc:
        return False, "{} {}; {}".format(where, *explain_error(exc, tls, port,
                                                               bool(mqtt_cfg.ca_certs)))
    deadline = time.monotonic() + timeout
    rc = mqtt.MQTT_ERR_SUCCESS
    while not answer and rc == mqtt.MQTT_ERR_SUCCESS and time.monotonic() < deadline:
        rc = client.loop(0.1)
    client.disconnect()
    client.loop(0.1)  # sends DISCONNECT and closes the socket
    if answer and not answer[0].is_failure:
        how = ("TLS" if tls else "plain") + (f", user {user}" if user else ", anonymous")
        return True, f"{where} accepted the connection ({how})"
    if answer:
        reason, fix = explain_refusal(answer[0])
    elif rc == mqtt.MQTT_ERR_SUCCESS:
        reason, fix = (f"did not answer CONNECT within {timeout:g} s",
                       "is the broker hung? see its log")
    else:
        reason, fix = explain_silent_close(host, port, tls)
    return False, f"{where} {reason}; {fix}"
