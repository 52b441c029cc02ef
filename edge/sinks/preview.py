"""The live view: a small web page from which an installer aims the camera and tunes the distance.

It is a sink of the door loop like the LED and MQTT ones. The loop's only cost is
:meth:`LiveView.on_frame`, which keeps a reference to the latest frame and its tracked faces;
nothing is drawn or encoded unless someone is watching. Each viewer is served on its own thread
of a :class:`http.server.ThreadingHTTPServer`, which annotates and JPEG-encodes the latest frame
at the view's own rate (``preview.fps``), shared by all viewers, and drops a viewer whose socket
stalls. Nothing is written to disk.

Endpoints: ``/`` (the page), ``/stream.mjpg`` (MJPEG, multipart/x-mixed-replace),
``/snapshot.jpg`` (one annotated frame, for curl over SSH), ``/status.json`` (the figures the
page shows). Bound to 127.0.0.1 by default; any other address needs ``preview.password``
(HTTP Basic auth, any user name), and repeated wrong passwords from one address get 429.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import math
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import cv2

from edge.door import cpu_temperature
from edge.errors import ConfigError
from edge.images import COLOURS
from edge.sinks import Sink

log = logging.getLogger(__name__)

FAILURES_ALLOWED = 5  # wrong passwords from one address within FAILURE_WINDOW_S ...
FAILURE_WINDOW_S = 60.0
LOCKOUT_S = 60.0  # ... then every request from it gets 429 for this long
SEND_TIMEOUT_S = 10.0  # a viewer that takes no data for this long is dropped
ALERTS_KEPT = 20


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_access(host: str, password: str) -> None:
    """Refuse to show the camera beyond this machine without a password."""
    if not is_loopback(host) and not password:
        raise ConfigError(f"preview.bind = '{host}' shows the camera to the network: set "
                          "preview.password (or bind to 127.0.0.1 and use SSH port forwarding)")


def parse_address(text: str) -> tuple[str | None, int]:
    """``--preview [HOST:]PORT`` as (host or None, port)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or None
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ConfigError(f"--preview {text!r}: write PORT or HOST:PORT, e.g. --preview 8080 "
                          "or --preview 0.0.0.0:8080")
    return host, number


def suggested_threshold(width_frac: float) -> float:
    """The largest two-decimal policy.min_face_width_frac at which a face this wide warns."""
    return math.floor(width_frac * 100 + 1e-9) / 100


def draw(image, faces, threshold: float):
    """A copy of ``image`` with each tracked face boxed in its verdict's colour (track id,
    verdict, score, width as % of the frame, 'close' at or over ``threshold``) and a bar along
    the bottom as wide as a face must be to warn."""
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 400))
    scale = 0.4 * thick
    for t in faces:
        colour = COLOURS.get(t.verdict, COLOURS[None])
        b = t.face.box
        x1, y1, x2, y2 = (int(round(v)) for v in (b.x1, b.y1, b.x2, b.y2))
        close = t.width_frac >= threshold
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick * (2 if close else 1))
        verdict = f"{t.verdict} {t.verdict_score:.2f}" if t.verdict else "face"
        text = f"#{t.track_id} {verdict} {100 * t.width_frac:.0f}%" + (" close" if close else "")
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 4 if y1 - th - 6 >= 0 else y2 + th + 4
        tx = max(0, min(x1, w - tw - 4))
        cv2.rectangle(out, (tx, ty - th - 3), (tx + tw + 4, ty + base - 1), colour, -1)
        cv2.putText(out, text, (tx + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    bar = int(round(threshold * w))
    y = h - 6 * thick
    cv2.rectangle(out, (0, y), (bar, h - 1), (255, 255, 255), -1)
    label = f"warns at {100 * threshold:.0f}% of the width"
    cv2.putText(out, label, (2, y - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


class LoginGuard:
    """Counts wrong passwords per address; too many within a window locks the address out."""

    def __init__(self, password: str, allowed: int = FAILURES_ALLOWED,
                 window_s: float = FAILURE_WINDOW_S, lockout_s: float = LOCKOUT_S):
        self.password = password.encode()
        self.allowed, self.window_s, self.lockout_s = allowed, window_s, lockout_s
        self._failures: dict[str, deque] = {}
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def locked_for(self, address: str) -> float:
        """Seconds ``address`` stays locked out (0: not locked)."""
        with self._lock:
            left = self._locked.get(address, 0.0) - time.monotonic()
            if left <= 0:
                self._locked.pop(address, None)
            return max(0.0, left)

    def accepts(self, address: str, header: str | None) -> bool:
        if not self.password:
            return True
        given = b""
        if header and header.startswith("Basic "):
            try:
                given = base64.b64decode(header[6:], validate=True).partition(b":")[2]
            except ValueError:
                given = b""
        if hmac.compare_digest(given, self.password):
            return True
        if header:  # a browser's first, credential-less request is not a wrong guess
            now = time.monotonic()
            with self._lock:
                times = self._failures.setdefault(address, deque())
                times.append(now)
                while times and now - times[0] > self.window_s:
                    times.popleft()
                if len(times) >= self.allowed:
                    self._locked[address] = now + self.lockout_s
                    times.clear()
                    log.warning("live view: %d wrong passwords from %s; locked out for %.0f s",
                                self.allowed, address, self.lockout_s)
        return False


class LiveView(Sink):
    """The live view's server and its sink interface (``on_frame``, ``on_event``, ``on_stats``,
    ``close``). ``watch`` tells it the other sinks and the loop's RunStats, whose state the
    status shows."""

    def __init__(self, cfg, detector=None, classifier=None, port: int | None = None):
        pcfg = cfg.preview
        self.host = pcfg.bind
        check_access(self.host, pcfg.password)
        self.fps = pcfg.fps
        self.quality = pcfg.jpeg_quality
        self.max_viewers = pcfg.max_viewers
        self.threshold = cfg.policy.min_face_width_frac
        self.guard = LoginGuard(pcfg.password)
        self.info = {
            "detector": f"{detector.path.name} {detector.describe()}" if detector else None,
            "classifier": f"{classifier.path.name} {classifier.describe()}" if classifier
            else None,
            "motion_gating": {"enabled": cfg.detector.motion_gate,
                              "threshold": cfg.detector.motion_threshold,
                              "force_every": cfg.detector.force_every,
                              "detect_every": cfg.detector.every},
            "source": cfg.camera.source,
        }
        self.gpio = cfg.gpio
        self.sinks: list = []
        self.run_stats = None
        self.started = time.monotonic()
        self.encoded = 0
        self._latest = None  # (Frame, [TrackedFace]) as the loop last handed it over
        self._ticks: deque = deque(maxlen=60)
        self._alerts: deque = deque(maxlen=ALERTS_KEPT)
        self._last_stats: dict = {}
        self._cache = (None, b"")  # (the frame tuple encoded, its JPEG)
        self._encode_lock = threading.Lock()
        self._viewers = 0
        self._viewers_lock = threading.Lock()
        self._stop = threading.Event()
        self.page = resources.files("edge").joinpath("data/preview.html").read_bytes()
        try:
            server = _Server6 if ":" in self.host else ThreadingHTTPServer
            self.server = server((self.host, port if port is not None else pcfg.port),
                                 _handler_for(self))
        except OSError as exc:
            raise ConfigError(f"preview.port = {pcfg.port}, preview.bind = '{self.host}': "
                              f"cannot listen there ({exc.strerror}); choose another port or "
                              "address") from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="live-view",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "LiveView":
        self._thread.start()
        log.info("live view on %s (%s); it shows the camera live", self.url,
                 "password required" if self.guard.password else "no password: this machine "
                 "only, or through ssh -L")
        return self

    def watch(self, sinks, run_stats=None) -> None:
        self.sinks = [s for s in sinks if s is not self]
        self.run_stats = run_stats

    # --- the sink interface: what the door loop pays ------------------------------------------
    def on_frame(self, frame, faces) -> None:
        self._latest = (frame, faces)
        self._ticks.append(time.monotonic())

    def on_event(self, event, jpeg: bytes | None = None) -> None:
        self._alerts.appendleft(event)

    def on_stats(self, stats: dict) -> None:
        self._last_stats = stats

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    # --- what the server's threads do ---------------------------------------------------------
    def jpeg(self) -> tuple[object, bytes]:
        """The latest frame, annotated and encoded once however many viewers want it."""
        latest = self._latest
        if latest is None:
            return None, b""
        with self._encode_lock:
            if self._cache[0] is latest:
                return self._cache
            frame, faces = latest
            ok, buf = cv2.imencode(".jpg", draw(frame.image, faces, self.threshold),
                                   [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            self.encoded += 1
            self._cache = (latest, buf.tobytes() if ok else b"")
            return self._cache

    @property
    def viewers(self) -> int:
        """Streams open now."""
        with self._viewers_lock:
            return self._viewers

    def join_viewers(self) -> bool:
        with self._viewers_lock:
            if self._viewers >= self.max_viewers:
                return False
            self._viewers += 1
            return True

    def leave_viewers(self) -> None:
        with self._viewers_lock:
            self._viewers -= 1

    def frames(self):
        """JPEGs of new frames, at most ``fps`` a second, until the view closes."""
        period = 1.0 / self.fps
        sent = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            if self._latest is None or self._latest is sent:
                if self._stop.wait(0.02):  # nothing new yet: look again soon, not a period later
                    return
                continue
            next_at = max(next_at + period, time.monotonic())
            sent, data = self.jpeg()
            if data:
                yield data

    def status(self) -> dict:
        latest = self._latest
        frame, faces = latest if latest is not None else (None, [])
        nearest = max(faces, key=lambda t: t.width_frac, default=None)
        ticks = list(self._ticks)
        fps = round((len(ticks) - 1) / (ticks[-1] - ticks[0]), 2) \
            if len(ticks) > 1 and ticks[-1] > ticks[0] else None
        stats = self._run_summary()
        out = {
            **self.info,
            "live": True,
            "frame": {"width": frame.width, "height": frame.height, "index": frame.index}
            if frame is not None else None,
            "fps": fps,
            "stage_ms": stats.get("stage_ms", {}),
            "frames": stats.get("frames"),
            "skipped_detections": stats.get("skipped_detections"),
            "dropped_frames": stats.get("dropped_frames"),
            "cpu_temp_c": cpu_temperature(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "threshold": self.threshold,
            "faces": [{"track_id": t.track_id, "verdict": t.verdict,
                       "score": round(t.verdict_score, 3), "width_frac": round(t.width_frac, 4),
                       "box": t.face.box.as_list(), "close": t.width_frac >= self.threshold}
                      for t in sorted(faces, key=lambda t: -t.width_frac)],
            "nearest": None,
            "broker": self._broker(),
            "pins": self._pins(),
            "alerts": [{"time": e.time, "type": e.type, "verdict": e.label,
                        "score": round(e.label_score, 3), "track_id": e.track_id,
                        "width_frac": round(e.face_width_frac, 4)} for e in list(self._alerts)],
            "viewers": self._viewers,
            "max_viewers": self.max_viewers,
            "view_fps": self.fps,
            "encoded_frames": self.encoded,
        }
        if nearest is not None:
            value = suggested_threshold(nearest.width_frac)
            out["nearest"] = {"track_id": nearest.track_id,
                              "width_frac": round(nearest.width_frac, 4),
                              "close": nearest.width_frac >= self.threshold,
                              "suggested": value,
                              "config_line": f"policy.min_face_width_frac = {value:.2f}"}
        return out

    def _run_summary(self) -> dict:
        if self.run_stats is None:
            return self._last_stats
        for _ in range(3):  # the loop appends to the deques while this reads them
            try:
                return self.run_stats.summary()
            except RuntimeError:
                continue
        return self._last_stats

    def _broker(self) -> dict:
        from edge.sinks.mqtt import MqttSink
        mq = next((s for s in self.sinks if isinstance(s, MqttSink)), None)
        if mq is None:
            return {"state": "none", "detail": "no broker configured (mqtt.url): events go to "
                    "stdout"}
        status = mq.status
        out = {"state": "connected" if status.connected else "unreachable",
               "broker": f"{mq.host}:{mq.port}"}
        if not status.connected:
            out["detail"] = "; ".join(filter(None, (str(status), status.fix, "events are kept "
                                                    "and sent when it is back")))
            out["since"] = status.since
        try:
            out["queued"] = len(mq.outbox)
            out["dropped"] = mq.outbox.dropped
        except Exception as exc:  # the outbox's folder may be gone; the view carries on
            out["queued"] = None
            out["detail"] = out.get("detail") or f"queue unreadable: {exc}"
        out["sent"] = mq.sent
        return out

    def _pins(self) -> dict:
        from edge.sinks.pins import DoorSignals
        signals = next((s for s in self.sinks if isinstance(s, DoorSignals)), None)
        pins = {"red_led": self.gpio.red_led, "buzzer": self.gpio.buzzer,
                "green_led": self.gpio.green_led}
        if signals is None:
            return {"fitted": False, "detail": "no pin sink", **{k: {"pin": v} for k, v in
                                                                   pins.items()}}
        out = {"fitted": signals.available, "detail": signals.reason}
        for name, attr in (("red_led", "red"), ("buzzer", "buzzer"), ("green_led", "green")):
            dev = getattr(signals, attr)
            try:
                active = bool(dev.value) if dev is not None else None
            except Exception:  # a device closed under us reads as unknown
                active = None
            out[name] = {"pin": pins[name] if pins[name] >= 0 else None, "active": active}
        return out


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler_for(view: LiveView):
    class Handler(BaseHTTPRequestHandler):
        server_version = "maskdoor"
        timeout = SEND_TIMEOUT_S

        def log_message(self, fmt, *args):
            log.debug("live view %s: " + fmt, self.client_address[0], *args)

        def _plain(self, code: int, text: str, headers: dict | None = None) -> None:
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _send(self, ctype: str, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _allowed(self) -> bool:
            address = self.client_address[0]
            left = view.guard.locked_for(address)
            if left:
                self._plain(429, "too many wrong passwords; try again later",
                            {"Retry-After": str(math.ceil(left))})
                return False
            if view.guard.accepts(address, self.headers.get("Authorization")):
                return True
            self._plain(401, "password required",
                        {"WWW-Authenticate": 'Basic realm="maskdoor live view"'})
            return False

        def do_GET(self):  # noqa: N802 (http.server's name)
            if not self._allowed():
                return
            path = self.path.split("?", 1)[0]
            try:
                if path in ("/", "/index.html"):
                    self._send("text/html; charset=utf-8", view.page)
                elif path == "/status.json":
                    self._send("application/json", json.dumps(view.status()).encode())
                elif path == "/snapshot.jpg":
                    _, data = view.jpeg()
                    if data:
                        self._send("image/jpeg", data)
                    else:
                        self._plain(503, "no frame yet", {"Retry-After": "1"})
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self._plain(404, "not found: try /, /status.json, /snapshot.jpg or "
                                "/stream.mjpg")
            except (ConnectionError, socket.timeout) as exc:
                log.debug("live view viewer %s dropped: %s", self.client_address[0], exc)
                self.close_connection = True

        def _stream(self) -> None:
            if not view.join_viewers():
                self._plain(503, f"already {view.max_viewers} viewer(s) (preview.max_viewers)",
                            {"Retry-After": "5"})
                return
            try:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                for data in view.frames():
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                    self.wfile.flush()
            finally:
                view.leave_viewers()
                self.close_connection = True

    return Handler


def for_run(cfg, detector, classifier) -> LiveView | None:
    """The live view ``cfg`` asks for (bound, not serving yet), or None when it is off."""
    if not cfg.preview.enabled:
        return None
    return LiveView(cfg, detector, classifier)
