"""Many doors, one place: five real appliances publish to a site broker, the shipped mosquitto
bridge example forwards their topics to a central broker, and one subscriber there receives every
alert of every door exactly once (deduplicated on the alert's id), in each door's order, across a
restart of the central broker and of the site broker that runs the bridge."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, Broker

EXE = str(Path(sys.executable).parent / "maskdoor")
BRIDGE_EXAMPLE = ROOT / "docs" / "mosquitto-bridge.conf"
DOORS = 5


def site_config(example: str, site_port: int, central_port: int, folder: Path) -> str:
    """The shipped example, pointed at loopback ports and a test folder (nothing else changed)."""
    text = example.replace("listener 1883", f"listener {site_port} 127.0.0.1")
    text = text.replace("address central.example.org:1883", f"address 127.0.0.1:{central_port}")
    text = text.replace("persistence_location /var/lib/mosquitto/",
                        f"persistence_location {folder}/")
    assert text.count("127.0.0.1") == 2, "the example's listener or address line changed"
    return text


class CentralDesk:
    """A subscriber on the central broker with a persistent session (as `maskdoor alerts
    --keep-as` has), so alerts forwarded while it reconnects wait for it."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt
        self.received: list[dict] = []
        self.availability: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="central-desk",
                                  clean_session=False)
        self.client.on_connect = lambda c, *a: c.subscribe(
            [("maskdoor/+/events", 1), ("maskdoor/+/availability", 1)])
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.5, 2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            if msg.topic.endswith("/events"):
                self.received.append(json.loads(msg.payload))
            else:
                self.availability.append((msg.topic.split("/")[1], msg.payload.decode()))

    def unique(self) -> dict[str, dict]:
        with self.lock:
            out: dict[str, dict] = {}
            for ev in self.received:
                out.setdefault(ev["id"], ev)
            return out

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def start_door(n: int, site_url: str, tmp_path: Path) -> subprocess.Popen:
    conf = tmp_path / f"door{n}.toml"
    # the demo clip looped, every frame processed (however loaded the machine), no cool-down: each
    # pass of the unmasked person is a new alert, and the doors keep warning while brokers restart
    conf.write_text("[camera]\nsource = 'demo'\nloop = true\n"
                    "[policy]\ncooldown_s = 0.0\n"
                    f"[mqtt]\nurl = '{site_url}'\ndevice_id = 'door{n}'\nhomeassistant = false\n"
                    f"[service]\nstate_dir = '{tmp_path / f'state{n}'}'\n")
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    return subprocess.Popen([EXE, "run", "--config", str(conf)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def restart(broker: Broker, down_s: float = 3.0) -> None:
    broker.stop()
    time.sleep(down_s)
    broker.start()


def test_every_alert_of_five_doors_reaches_the_centre_once_in_order(broker, tmp_path, request):
    central = broker
    central.stop()
    (tmp_path / "central").mkdir()
    central.conf.write_text(f"listener {central.port} 127.0.0.1\nallow_anonymous true\n"
                            f"persistence true\npersistence_location {tmp_path / 'central'}/\n")
    central.start()
    (tmp_path / "site").mkdir()
    site = Broker(tmp_path / "site")
    site.conf.write_text(site_config(BRIDGE_EXAMPLE.read_text(), site.port, central.port,
                                     tmp_path / "site"))
    site.start()
    request.addfinalizer(site.stop)  # stopped however the test ends
    desk = CentralDesk(central.port)
    follower = subprocess.Popen([EXE, "alerts", "--mqtt", central.url, "--keep-as", "front-desk",
                                 "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    request.addfinalizer(follower.kill)  # however the test ends
    said = follower.stderr.readline()  # subscribed before the first door starts
    assert said.startswith("listening on"), said + follower.stderr.read()
    printed_lines: list[str] = []
    threading.Thread(target=lambda: printed_lines.extend(follower.stdout), daemon=True).start()
    doors = [start_door(n, site.url, tmp_path) for n in range(1, DOORS + 1)]
    logs: list[list[str]] = [[] for _ in range(DOORS)]
    readers = []
    for i, p in enumerate(doors):
        t = threading.Thread(target=lambda i=i, p=p: logs[i].extend(p.stderr), daemon=True)
        t.start()
        readers.append(t)

    def every_door_logged(text: str, times: int, timeout: float = 300) -> None:
        """Wait until each door has logged ``text`` ``times`` times (the machine sets the pace)."""
        deadline = time.time() + timeout
        while min(sum(text in line for line in log) for log in logs) < times:
            assert time.time() < deadline, f"doors did not log {text!r} {times} times"
            time.sleep(0.5)

    def every_door_warned(times: int) -> None:
        every_door_logged(" alert ", times)

    try:
        every_door_warned(1)
        restart(central)          # the central broker goes away and comes back
        every_door_warned(2)
        restart(site)             # so does the site broker, and the bridge with it
        every_door_logged("connected again", 1)
        # a warning after the doors are back: stopped then, a door has nothing left to send (one
        # stopped while its broker is away keeps its queue for its next start, which is not here)
        every_door_warned(sum(" alert " in line for log in logs for line in log) // DOORS + 2)
    finally:
        for p in doors:
            p.send_signal(signal.SIGTERM)
        for p in doors:
            p.wait(timeout=60)
        for t in readers:
            t.join(timeout=10)
    logs = ["".join(log) for log in logs]
    assert all(p.returncode == 0 for p in doors), [log[-1500:] for log in logs]
    # the door logs each alert with its id once the alert is safely queued on disk
    raised = {f"door{i + 1}": re.findall(r" alert ([0-9a-f-]{36}): ", log)
              for i, log in enumerate(logs)}
    assert all(raised.values()), raised
    total = sum(map(len, raised.values()))
    # a door stopped with alerts still queued sends them at its next start; here every door was
    # connected at the end, so everything it raised must be at the centre
    deadline = time.time() + 60
    while time.time() < deadline and len(desk.unique()) < total:
        time.sleep(0.5)
    unique = desk.unique()
    got = {d: [i for i, e in unique.items() if e["device"] == d] for d in raised}
    duplicates = len(desk.received) - len(unique)
    desk.close()
    deadline = time.time() + 30
    while len(printed_lines) < len(unique) and time.time() < deadline:
        time.sleep(0.5)
    follower.send_signal(signal.SIGINT)
    _, follower_err = follower.communicate(timeout=30)
    printed = "".join(printed_lines)
    follower_err = said + follower_err
    site.stop()
    print(f"doors {DOORS}, alerts raised {total}, received {len(unique)} unique, "
          f"lost {total - len(unique)}, duplicates before dedup {duplicates}")
    assert {d: sorted(ids) for d, ids in got.items()} == \
        {d: sorted(ids) for d, ids in raised.items()}, \
        "\n".join(line for log in logs for line in log.splitlines() if "MQTT" in line or "queue" in line)
    assert got == raised, "each door's alerts reach the centre in the order the door raised them"
    offline = {d for d, state in desk.availability if state == "offline"}
    assert offline == set(raised), "each door's clean stop reaches the centre as 'offline'"
    # `maskdoor alerts` at the centre prints every alert of every door once
    shown = [json.loads(line) for line in printed.splitlines()]
    missing = [n for n, i in enumerate(unique) if i not in {e["id"] for e in shown}]
    assert not missing, (missing, len(unique), follower_err[-1500:])
    assert all(f"door door{n} is offline" in follower_err for n in range(1, DOORS + 1))
