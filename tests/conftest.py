import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_IMAGES = sorted((FIXTURES / "andrewmvd" / "images").glob("*.jpg"))

os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="keras-home-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    d = SHARED / "weights"
    if not (d / "deploy.prototxt").is_file():
        pytest.skip(f"shared weights not found at {d}")
    return d


def needs_tensorflow():
    return pytest.importorskip("tensorflow")


# --- a real mosquitto broker on a free loopback port ---------------------------------------------
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args, cwd: Path):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str = "ca") -> Path:
    """A self-signed CA (EC P-256) in ``folder``: ``<name>.crt`` and ``<name>.key``."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN=maskdoor test {name}", cwd=folder)
    return folder / f"{name}.crt"


def make_server_cert(folder: Path, ca: Path, name: str = "server",
                     san: str = "IP:127.0.0.1,DNS:localhost") -> tuple[Path, Path]:
    """A server certificate signed by ``ca`` whose subjectAltName is ``san``."""
    ext = folder / f"{name}.ext"
    ext.write_text(f"subjectAltName = {san}\nextendedKeyUsage = serverAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca), "-CAkey",
             str(ca.with_suffix(".key")), "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
             "-extfile", ext.name, cwd=folder)
    return folder / f"{name}.crt", folder / f"{name}.key"


class Broker:
    """A mosquitto process on a free loopback port, configured for one test.

    ``tls``: the listener speaks TLS with a certificate from a CA made in ``folder`` (its file is
    ``ca_file``; ``san`` is the certificate's subjectAltName). ``users``: {name: password},
    written with mosquitto_passwd; anonymous clients are then refused. ``persistence``: sessions
    and queued messages survive ``stop()``/``start()``. The process can be stopped, started,
    killed, frozen (SIGSTOP: the port stays open and nothing answers) and thawed.
    """

    def __init__(self, folder: Path, tls: bool = False, users: dict | None = None,
                 persistence: bool = False, san: str = "IP:127.0.0.1,DNS:localhost"):
        self.port = free_port()
        self.folder = Path(folder) / f"broker-{self.port}"
        self.folder.mkdir(parents=True)
        self.tls = tls
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"
        self.ca_file = None
        lines = [f"listener {self.port} 127.0.0.1", "user root",
                 f"log_dest file {self.folder / 'mosquitto.log'}",
                 "max_queued_messages 100000", "queue_qos0_messages true"]
        if tls:
            self.ca_file = make_ca(self.folder)
            cert, key = make_server_cert(self.folder, self.ca_file, san=san)
            lines += [f"cafile {self.ca_file}", f"certfile {cert}", f"keyfile {key}"]
        if users:
            pw = self.folder / "passwd"
            pw.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), name, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if persistence:
            lines += ["persistence true", f"persistence_location {self.folder}/",
                      "autosave_interval 0"]
        else:
            lines.append("persistence false")
        self.conf = self.folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None
        self.frozen = False

    def start(self):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}; see "
                                   f"{self.folder / 'mosquitto.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self):
        """SIGTERM: mosquitto closes every connection and saves its database (if persistent)."""
        if self.proc is not None:
            self.thaw()
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def freeze(self):
        """SIGSTOP: connections stay open (the kernel still accepts new ones), nothing answers."""
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        if self.proc is not None and self.frozen:
            self.proc.send_signal(signal.SIGCONT)
            self.frozen = False


def needs_mosquitto():
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")


@pytest.fixture
def broker(tmp_path):
    needs_mosquitto()
    b = Broker(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def make_broker(tmp_path):
    """``make_broker(tls=, users=, persistence=, san=)``: a started Broker, stopped at the end."""
    needs_mosquitto()
    made = []

    def make(**kw):
        b = Broker(tmp_path, **kw).start()
        made.append(b)
        return b
    yield make
    for b in made:
        b.stop()


class Subscriber:
    """Collects (topic, payload, retain) from a broker; ``wait(pred)`` polls until true.

    ``client_id`` with ``clean_session=False`` makes a persistent session: with a persistent
    broker, QoS 1 and 2 messages published while this subscriber (or the broker) was away are
    delivered when both are back; ``qos=2`` subscribes for exactly-once delivery. ``redelivered``
    holds the (topic, payload) of messages the broker marked as sent again (DUP: it had no
    acknowledgement of an earlier copy)."""

    def __init__(self, url: str, topics: list[str], client_id: str | None = None,
                 clean_session: bool = True, ca_file=None, username=None, password=None,
                 qos: int = 1):
        import paho.mqtt.client as mqtt
        from edge.sinks.mqtt import parse_url
        host, port, tls = parse_url(url)
        self.messages: list[tuple[str, bytes, bool]] = []
        self.redelivered: list[tuple[str, bytes]] = []
        self.qos: list[tuple[str, int]] = []  # (topic, QoS it was delivered at), in order
        self._lock = threading.Lock()
        self._ready = threading.Event()
        if client_id is None:
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        else:
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                      clean_session=clean_session)
        if tls:
            self.client.tls_set(ca_certs=str(ca_file) if ca_file else None)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *a: (c.subscribe([(t, qos) for t in topics]),
                                                self._ready.set())
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._ready.wait(5)
        time.sleep(0.2)

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))
            self.qos.append((msg.topic, msg.qos))
            if msg.dup:
                self.redelivered.append((msg.topic, msg.payload))

    def on(self, suffix: str):
        with self._lock:
            return [m for m in self.messages if m[0].endswith(suffix)]

    def wait(self, predicate, timeout: float = 10.0) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mock_pins():
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin
    previous = Device.pin_factory
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = previous


def on_periods(pin):
    """[(start, length)] of the pin's high periods from the mock pin's recorded states
    (each state's timestamp is the time since the previous change)."""
    out, start, now = [], None, 0.0
    for s in pin.states:
        now += s.timestamp
        if s.state and start is None:
            start = now
        elif not s.state and start is not None:
            out.append((start, now - start))
            start = None
    return out
