"""Power cuts, played by SIGKILL: the real ``maskdoor run`` on the looping demo clip, a real
broker, killed at random moments and right as it logs an alert, restarted each time. Every alert
it ever logged must reach the subscriber."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import Subscriber, free_port

EXE = str(Path(sys.executable).parent / "maskdoor")
KILLS = 20
ALERT = " INFO edge.door: alert "


def config(tmp_path: Path, url: str) -> Path:
    conf = tmp_path / "door.toml"
    conf.write_text("[camera]\nsource = 'demo'\nloop = true\n"
                    "[policy]\ncooldown_s = 0.0\n"  # the looping clip's person warns every pass
                    f"[mqtt]\nurl = '{url}'\ndevice_id = 'doork'\nstats_interval_s = 0.0\n"
                    f"[service]\nstate_dir = '{tmp_path / 'state'}'\n")
    return conf


class Door:
    """One ``maskdoor run``; ``kill_on_alert`` sends SIGKILL from the thread that reads stderr,
    as soon as an alert line arrives."""

    def __init__(self, conf: Path, kill_on_alert: bool = False):
        env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
        self.proc = subprocess.Popen([EXE, "run", "--config", str(conf)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.kill_on_alert = kill_on_alert
        self.alerts: list[str] = []
        self.lines: list[str] = []
        self.killed_at_alert = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            if ALERT in line:
                if self.kill_on_alert and not self.killed_at_alert.is_set():
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.killed_at_alert.set()
                self.alerts.append(line.split(ALERT, 1)[1].split(":", 1)[0])
            self.lines.append(line)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.finish()

    def finish(self, timeout: float = 30):
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)

    @property
    def tracebacks(self) -> int:
        return sum("Traceback" in line for line in self.lines)


def queued_ids(outbox: Path) -> set[str]:
    out = set()
    for p in outbox.glob("*.json"):
        try:
            out.add(json.loads(p.read_bytes())["id"])
        except (OSError, ValueError, KeyError):
            pass
    return out


def test_an_alert_is_on_disk_before_it_is_logged(tmp_path):
    """No broker at all: whatever was logged must be in the outbox folder when the process dies
    the moment the line is out."""
    door = Door(config(tmp_path, f"mqtt://127.0.0.1:{free_port()}"), kill_on_alert=True)
    try:
        assert door.killed_at_alert.wait(120), "".join(door.lines)[-3000:]
    finally:
        door.kill()
    assert door.proc.returncode == -signal.SIGKILL
    assert door.alerts and set(door.alerts) <= queued_ids(tmp_path / "state" / "outbox")
    assert not list((tmp_path / "state" / "outbox").glob("*.tmp"))


def test_random_kills_lose_no_logged_alert(broker, tmp_path):
    rng = random.Random(20261130)
    conf = config(tmp_path, broker.url)
    sub = Subscriber(broker.url, ["maskdoor/doork/events"])
    started = time.monotonic()
    logged: list[str] = []
    at_alert = 0
    try:
        for i in range(KILLS):
            door = Door(conf, kill_on_alert=i % 2 == 0)
            try:
                if door.kill_on_alert:
                    assert door.killed_at_alert.wait(120), "".join(door.lines)[-3000:]
                    at_alert += 1
                else:  # anywhere: loading the models, sending, writing an entry, between
                    time.sleep(rng.uniform(0.3, 7.0))
            finally:
                door.kill()
            assert door.tracebacks == 0, "".join(door.lines)[-3000:]
            logged += door.alerts
        last = Door(conf)  # the restart after the last kill delivers what is left
        try:
            delivered = lambda: {json.loads(m[1])["id"] for m in sub.on("/events")}  # noqa: E731
            sub.wait(lambda: set(logged) <= delivered(), timeout=60)
            assert sub.wait(lambda: any("watching" in line for line in last.lines), 60)
        finally:
            last.proc.send_signal(signal.SIGTERM)
            last.finish()
        assert last.proc.returncode == 0 and last.tracebacks == 0, "".join(last.lines)[-3000:]
        received = [json.loads(m[1])["id"] for m in sub.on("/events")]
    finally:
        sub.close()
    lost = set(logged) - set(received)
    elapsed = time.monotonic() - started
    print(f"\n{KILLS} kill -9s ({at_alert} the moment an alert was logged), {len(set(logged))} "
          f"alerts logged, {len(set(received))} received, {len(lost)} lost, "
          f"{len(received) - len(set(received))} sent twice, {elapsed:.0f} s")
    assert at_alert == KILLS // 2 and len(set(logged)) >= at_alert
    assert lost == set()
