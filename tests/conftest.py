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
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, folder: Path):
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             "persistence false\n")
        self.proc = None

    def start(self):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def broker(tmp_path):
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    b = Broker(tmp_path).start()
    yield b
    b.stop()


class Subscriber:
    """Collects (topic, payload, retain) from a broker; ``wait(pred)`` polls until true."""

    def __init__(self, url: str, topics: list[str]):
        import paho.mqtt.client as mqtt
        from edge.mqtt import parse_url
        host, port, _ = parse_url(url)
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: (c.subscribe([(t, 1) for t in topics]),
                                                self._ready.set())
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._ready.wait(5)
        time.sleep(0.2)

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

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
