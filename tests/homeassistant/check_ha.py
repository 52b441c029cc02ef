"""maskdoor against a real Home Assistant, all on loopback. Run with the Home Assistant venv's
python (run.sh does): it starts a mosquitto and Home Assistant (only mqtt, http, api, config,
websocket_api and auth), runs a real ``maskdoor run`` on the demo clip, and checks through
Home Assistant's APIs, across start, alert, clean stop, kill -9 and restart:

- the unmasked binary sensor never turns on before the running door has seen an unmasked face
  in this run (every state change is recorded from a websocket subscription);
- the mask alert event entity carries every field of the alert, its own time among them;
- the diagnostic sensors are diagnostic and have live values;
- the last alert time survives a restart;
- Home Assistant's log holds no warning or error from its mqtt integration.

Prints one PASS/FAIL line per check; exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import aiohttp
import paho.mqtt.client as paho

FIELDS = {"id", "time", "device", "type", "label", "label_score", "score", "box",
          "face_width_frac", "track_id"}
DOOR = "hadoor"
USER, PASSWORD = "maskdoor", "maskdoor-test-password"
results: list[tuple[bool, str]] = []


def check(ok: bool, what: str) -> bool:
    results.append((bool(ok), what))
    print(("PASS  " if ok else "FAIL  ") + what, flush=True)
    return bool(ok)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


class BrokerWatch:
    """What the door publishes, as a plain subscriber sees it (paho 1.x, as Home Assistant
    2024.1 ships)."""

    def __init__(self, port: int):
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(client_id=f"checker-{uuid.uuid4().hex[:6]}")
        self.client.on_connect = lambda c, *a: c.subscribe(f"maskdoor/{DOOR}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((time.time(), msg.topic.rsplit("/", 1)[1], msg.payload,
                                  bool(msg.retain)))

    def live(self, leaf: str, since: float) -> list[tuple[float, dict | str]]:
        with self.lock:
            out = []
            for t, topic, payload, retained in self.messages:
                if topic == leaf and not retained and t >= since:
                    out.append((t, payload.decode() if leaf == "availability"
                                else json.loads(payload)))
            return out

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def retained(port: int, leaf: str, timeout: float = 5.0):
    """The retained message a fresh subscriber gets on ``maskdoor/DOOR/leaf``."""
    got: list = []
    c = paho.Client(client_id=f"late-{uuid.uuid4().hex[:6]}")
    c.on_connect = lambda cl, *a: cl.subscribe(f"maskdoor/{DOOR}/{leaf}", qos=1)
    c.on_message = lambda cl, u, m: got.append(m.payload)
    c.connect("127.0.0.1", port)
    c.loop_start()
    end = time.time() + timeout
    while not got and time.time() < end:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    return got[0] if got else None


class HA:
    def __init__(self, hass: str, folder: Path, broker_port: int):
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True)
        (folder / "configuration.yaml").write_text(
            "homeassistant:\n  name: maskdoor check\n  latitude: 0\n  longitude: 0\n"
            "  elevation: 0\n  unit_system: metric\n  time_zone: UTC\n  currency: EUR\n"
            "  country: DE\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\n"
            "api:\nwebsocket_api:\nauth:\nconfig:\n"
            "logger:\n  default: warning\n")
        storage = folder / ".storage"
        storage.mkdir()
        (storage / "core.config_entries").write_text(json.dumps({
            "version": 1, "minor_version": 1, "key": "core.config_entries",
            "data": {"entries": [{
                "entry_id": uuid.uuid4().hex, "version": 1, "minor_version": 1,
                "domain": "mqtt", "title": "127.0.0.1",
                "data": {"broker": "127.0.0.1", "port": broker_port, "discovery": True},
                "options": {}, "pref_disable_new_entities": False,
                "pref_disable_polling": False, "source": "user", "unique_id": None,
                "disabled_by": None}]}}))
        subprocess.run([hass, "--script", "auth", "-c", str(folder), "add", USER, PASSWORD],
                       check=True, capture_output=True, timeout=120)
        self.log = folder / "home-assistant.log"
        self.proc = subprocess.Popen([hass, "-c", str(folder), "--log-file", str(self.log)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.token = None

    async def login(self, session: aiohttp.ClientSession) -> str:
        cid = self.base + "/"
        async with session.post(f"{self.base}/auth/login_flow", json={
                "client_id": cid, "handler": ["homeassistant", None],
                "redirect_uri": cid}) as r:
            flow = await r.json()
        async with session.post(f"{self.base}/auth/login_flow/{flow['flow_id']}", json={
                "client_id": cid, "username": USER, "password": PASSWORD}) as r:
            code = (await r.json())["result"]
        async with session.post(f"{self.base}/auth/token", data={
                "grant_type": "authorization_code", "code": code, "client_id": cid}) as r:
            self.token = (await r.json())["access_token"]
        return self.token

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Door:
    def __init__(self, maskdoor: str, folder: Path, broker_port: int):
        self.maskdoor = maskdoor
        self.conf = folder / "door.toml"
        self.conf.write_text(
            "[camera]\nsource = 'demo'\nloop = true\nrealtime = true\n"
            f"[mqtt]\nurl = 'mqtt://127.0.0.1:{broker_port}'\ndevice_id = '{DOOR}'\n"
            "stats_interval_s = 2.0\narea = 'Entrance'\n"
            f"[service]\nstate_dir = '{folder / 'state'}'\n")
        self.proc = None
        self.started = 0.0
        self.logs: list[Path] = []

    def start(self):
        log = self.conf.parent / f"door-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self.started = time.time()
        self.proc = subprocess.Popen(
            [self.maskdoor, "run", "--config", str(self.conf)],
            env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"},
            stdout=subprocess.DEVNULL, stderr=log.open("w"))

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


class Watch:
    """Every state_changed of the door's entities, from a websocket subscription."""

    def __init__(self):
        self.changes: list[tuple[float, str, dict | None]] = []
        self.states: dict[str, dict] = {}

    def history(self, entity_id: str, since: float = 0.0) -> list[tuple[float, str]]:
        return [(t, s["state"] if s else "removed") for t, e, s in self.changes
                if e == entity_id and t >= since]

    async def until(self, predicate, timeout: float) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            if predicate():
                return True
            await asyncio.sleep(0.1)
        return bool(predicate())


async def websocket(session, ha: HA, watch: Watch, ready: asyncio.Event, requests: asyncio.Queue):
    async with session.ws_connect(f"{ha.base}/api/websocket") as ws:
        await ws.receive_json()
        await ws.send_json({"type": "auth", "access_token": ha.token})
        assert (await ws.receive_json())["type"] == "auth_ok"
        await ws.send_json({"id": 1, "type": "subscribe_events", "event_type": "state_changed"})
        pending: dict[int, asyncio.Future] = {}
        next_id = 2

        async def sender():
            nonlocal next_id
            while True:
                msg, fut = await requests.get()
                pending[next_id] = fut
                await ws.send_json({**msg, "id": next_id})
                next_id += 1

        task = asyncio.create_task(sender())
        try:
            async for raw in ws:
                msg = json.loads(raw.data)
                if msg.get("id") == 1 and msg["type"] == "result":
                    ready.set()
                elif msg.get("type") == "event":
                    data = msg["event"]["data"]
                    eid = data["entity_id"]
                    if DOOR in eid:
                        watch.changes.append((time.time(), eid, data["new_state"]))
                        if data["new_state"]:
                            watch.states[eid] = data["new_state"]
                elif msg.get("id") in pending:
                    pending.pop(msg["id"]).set_result(msg.get("result"))
        finally:
            task.cancel()


async def ws_call(requests: asyncio.Queue, msg: dict):
    fut = asyncio.get_running_loop().create_future()
    await requests.put((msg, fut))
    return await asyncio.wait_for(fut, 30)


async def scenario(args, tmp: Path) -> None:
    mosq_port = free_port()
    (tmp / "mosquitto.conf").write_text(f"listener {mosq_port} 127.0.0.1\n"
                                        "allow_anonymous true\npersistence false\n")
    mosq = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                             str(tmp / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ha = door = broker_watch = None
    try:
        if not check(wait_port(mosq_port, 10), f"mosquitto listening on 127.0.0.1:{mosq_port}"):
            return
        broker_watch = BrokerWatch(mosq_port)
        ha = HA(args.hass, tmp / "ha", mosq_port)
        if not check(wait_port(ha.port, 240), f"Home Assistant listening on {ha.base}"):
            return
        async with aiohttp.ClientSession() as session:
            await ha.login(session)
            headers = {"Authorization": f"Bearer {ha.token}"}

            async def rest(path: str):
                async with session.get(f"{ha.base}{path}", headers=headers) as r:
                    return await r.json() if r.status == 200 else None

            end = time.time() + 120
            while time.time() < end and "mqtt" not in ((await rest("/api/config")) or {}).get(
                    "components", []):
                await asyncio.sleep(0.5)
            check("mqtt" in (await rest("/api/config"))["components"],
                  "Home Assistant's mqtt integration set up from its config entry")
            watch, ready, requests = Watch(), asyncio.Event(), asyncio.Queue()
            ws_task = asyncio.create_task(websocket(session, ha, watch, ready, requests))
            await asyncio.wait_for(ready.wait(), 30)
            door = Door(args.maskdoor, tmp, mosq_port)
            await run_cycle(door, watch, requests, rest, mosq_port, broker_watch)
            ws_task.cancel()
    finally:
        if door is not None and door.proc is not None and door.proc.poll() is None:
            door.stop(signal.SIGKILL)
        if ha is not None:
            ha.stop()
            log_checks(ha.log)
        if broker_watch is not None:
            broker_watch.close()
        mosq.terminate()
        mosq.wait(timeout=10)


async def run_cycle(door: Door, watch: Watch, requests, rest, mosq_port: int, bw: BrokerWatch):
    binary, event = f"binary_sensor.{DOOR}_unmasked", f"event.{DOOR}_mask_alert"
    diag = {f"sensor.{DOOR}_{k}" for k in ("fps", "cpu_temperature", "queued_events",
                                           "dropped_events", "broker")}
    runs: list[tuple[float, float]] = []  # (start, stop) of each run

    def first_unmasked(since: float) -> float | None:
        hits = [t for t, s in bw.live("state", since) if s["unmasked"] > 0]
        return hits[0] if hits else None

    # --- run 1: start, alert, diagnostics, clean stop while someone unmasked is in view ------------
    door.start()
    ok = await watch.until(lambda: watch.states.get(event, {}).get("state") not in
                           (None, "unknown", "unavailable"), 120)
    check(ok, f"run 1: {event} fired")
    if ok:
        (_, sent), = bw.live("events", door.started)[:1] or [(0, {})]
        attrs = watch.states[event]["attributes"]
        check(FIELDS <= set(attrs) and attrs.get("event_type") == sent.get("type"),
              f"{event} has every documented field and event_type: "
              f"{sorted(k for k in attrs if k in FIELDS | {'event_type'})}")
        check(all(attrs.get(k) == sent.get(k) for k in FIELDS if k != "box")
              and attrs.get("box") == sent.get("box"),
              f"{event}'s attributes equal the alert as published, its own time "
              f"{attrs.get('time')} among them (Home Assistant's state: arrival "
              f"{watch.states[event]['state']})")
    ok = await watch.until(lambda: all(watch.states.get(e, {}).get("state") not in
                                       (None, "unavailable") for e in diag), 30)
    registry = await ws_call(requests, {"type": "config/entity_registry/list"})
    ours = {e["entity_id"]: e for e in registry or [] if DOOR in e["entity_id"]}
    check(ok and all(ours.get(e, {}).get("entity_category") == "diagnostic" for e in diag),
          "diagnostic entities, with live values: " + ", ".join(
              f"{e.split('.', 1)[1]}={watch.states.get(e, {}).get('state')}" for e in sorted(diag)))
    fps = watch.states.get(f"sensor.{DOOR}_fps", {}).get("state")
    check(fps not in (None, "unknown", "unavailable") and float(fps) > 0,
          f"sensor.{DOOR}_fps is a live number ({fps} fps)")
    devices = await ws_call(requests, {"type": "config/device_registry/list"})
    dev = next((d for d in devices or [] if d["name"] == f"maskdoor {DOOR}"), {})
    check(dev.get("area_id") == "entrance", f"device 'maskdoor {DOOR}' in the suggested area "
          f"(area_id {dev.get('area_id')})")
    check(await watch.until(lambda: watch.states.get(binary, {}).get("state") == "on", 120),
          f"run 1: {binary} on while the door sees the unmasked person")
    rc = door.stop()
    runs.append((door.started, time.time()))
    await watch.until(lambda: watch.states.get(binary, {}).get("state") == "unavailable", 20)
    kept = retained(mosq_port, "state")
    check(rc == 0 and kept is not None and json.loads(kept)["unmasked"] == 0,
          f"clean stop (exit {rc}): retained state {kept!r}")
    tail = [s for _, s in watch.history(binary, runs[-1][0])][-2:]
    check(tail == ["off", "unavailable"], f"clean stop: {binary} went {' -> '.join(tail)}")

    # --- run 2: kill -9 while someone unmasked is in view -------------------------------------
    door.start()
    check(await watch.until(lambda: watch.states.get(binary, {}).get("state") == "on"
                            and watch.history(binary, door.started), 120),
          f"run 2: {binary} on")
    door.stop(signal.SIGKILL)
    runs.append((door.started, time.time()))
    await watch.until(lambda: watch.states.get(binary, {}).get("state") == "unavailable", 20)
    kept = retained(mosq_port, "state")
    check(kept is not None and json.loads(kept)["unmasked"] > 0,
          f"kill -9 leaves the last state retained (the will only says offline): {kept!r}")
    last_alert = json.loads(kept)["last_alert"]

    # --- run 3: restart after kill -9 ----------------------------------------------------------
    door.start()
    check(await watch.until(lambda: [s for _, s in watch.history(binary, door.started)
                                     if s != "unavailable"], 120), f"run 3: {binary} came back")
    first = [s for _, s in watch.history(binary, door.started) if s != "unavailable"][0]
    check(first == "off", f"restart after kill -9: {binary}'s first state is {first!r}, not the "
          "stale retained one")
    attrs = watch.states[binary]["attributes"]
    check(last_alert and attrs.get("last_alert") == last_alert,
          f"last_alert survives the restart: {attrs.get('last_alert')} (before: {last_alert})")
    await watch.until(lambda: watch.states.get(binary, {}).get("state") == "on", 60)
    rc = door.stop()
    runs.append((door.started, time.time()))
    await watch.until(lambda: watch.states.get(binary, {}).get("state") == "unavailable", 20)

    # --- no 'on' the door did not see in the run it showed in ----------------------------------
    bad = []
    for start, stop in runs:
        seen = first_unmasked(start)
        for t, s in watch.history(binary, start):
            if t > stop:
                break
            if s == "on" and (seen is None or t < seen - 1.0):
                bad.append(f"on at +{t - start:.3f} s (door's first unmasked: "
                           f"{'none' if seen is None else f'+{seen - start:.3f} s'})")
    history = [f"{s}@+{t - runs[0][0]:.2f}s" for t, s in watch.history(binary, runs[0][0])]
    check(not bad, f"no '{binary} on' before the running door saw an unmasked face "
          f"({len(history)} changes: {' '.join(history)}){'; ' + '; '.join(bad) if bad else ''}")


def log_checks(log: Path) -> None:
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    mqtt = [l for l in lines if "homeassistant.components.mqtt" in l
            and (" WARNING " in l or " ERROR " in l)]
    check(log.is_file() and not mqtt, f"no warning or error from the mqtt integration in "
          f"home-assistant.log ({len(lines)} lines)" + "".join("\n      " + l for l in mqtt))
    others = [l for l in lines if " ERROR " in l]
    for line in others[:10]:
        print("      (other error in the log) " + line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hass", required=True, help="the venv's hass executable")
    ap.add_argument("--maskdoor", default=shutil.which("maskdoor") or "maskdoor")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maskdoor-ha-"))
    try:
        asyncio.run(scenario(args, tmp))
    finally:
        if args.keep:
            print(f"files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    failed = [w for ok, w in results if not ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
