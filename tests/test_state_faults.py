"""A state folder that is full, read-only, uncreatable, unreadable or littered: the real
``maskdoor run`` on the demo clip still starts, still warns at the door and still delivers the
alert to a real broker, and says once what is wrong with the folder."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import Subscriber

EXE = str(Path(sys.executable).parent / "maskdoor")
NOBODY = 65534


def event(i: int) -> bytes:
    return json.dumps({"id": f"queued-{i}", "time": "2026-11-30T00:00:00.000Z",
                       "device": "door9", "type": "unmasked_face"}).encode()


def run_door(broker, state: Path, wrapper: list[str] = (), setup: str = "") -> tuple[str, list]:
    """``maskdoor run --source demo`` with STATE_DIRECTORY=state; its stderr and the events that
    reached a subscriber."""
    sub = Subscriber(broker.url, ["maskdoor/door9/events"])
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock", "STATE_DIRECTORY": str(state)}
    cmd = [EXE, "run", "--source", "demo", "--mqtt", broker.url, "--device-id", "door9"]
    if setup:
        cmd = ["sh", "-ec", f'{setup}\nexec "$@"', "sh", *cmd]
    try:
        r = subprocess.run([*wrapper, *cmd], env=env, capture_output=True, text=True,
                           timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        sub.wait(lambda: any(b"unmasked_face" in m[1] and b"queued-" not in m[1]
                             for m in sub.on("/events")), timeout=10)
        return r.stderr, [json.loads(m[1]) for m in sub.on("/events")]
    finally:
        sub.close()


def alert_ids(stderr: str) -> list[str]:
    return [line.split("alert ", 1)[1].split(":", 1)[0] for line in stderr.splitlines()
            if " INFO edge.door: alert " in line]


def own_mounts() -> list[str]:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"mount namespaces are not allowed here: {probe.stderr.strip()}")
    return ["unshare", "-m", "--propagation", "private"]


def assert_delivered_live_alert(stderr: str, events: list) -> None:
    logged = alert_ids(stderr)
    assert len(logged) == 1, stderr[-3000:]
    assert logged[0] in [e["id"] for e in events], (logged, events)


def test_full_state_disk(broker, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    fill = (f"mount -t tmpfs -o size=16k tmpfs {state}\n"
            f"dd if=/dev/zero of={state}/filler bs=4k 2>/dev/null || true")
    stderr, events = run_door(broker, state, own_mounts(), fill)
    assert_delivered_live_alert(stderr, events)
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, stderr[-3000:]
    assert f"{state}/outbox" in errors[0] and "No space left on device" in errors[0]
    assert "free space on it" in errors[0]
    assert "still sent to the broker" in errors[0]


def test_read_only_state_disk_still_sends_new_and_old_events(broker, tmp_path):
    state = tmp_path / "state"
    (state / "outbox").mkdir(parents=True)
    (state / "outbox" / "000000000001.json").write_bytes(event(1))
    stderr, events = run_door(broker, state, own_mounts(),
                              f"mount --bind -o ro {state} {state}")
    assert_delivered_live_alert(stderr, events)
    assert events[0]["id"] == "queued-1", "the event queued before is sent first"
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Read-only file system" in errors[0], stderr[-3000:]
    assert not list((state / "outbox").glob("*.tmp"))


def test_state_dir_that_cannot_be_created(broker, tmp_path):
    (tmp_path / "a-file").write_text("")
    stderr, events = run_door(broker, tmp_path / "a-file" / "state")
    assert_delivered_live_alert(stderr, events)
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Not a directory" in errors[0] and "a-file/state" in errors[0]
    assert "service.state_dir" in errors[0]


def test_unreadable_outbox_folder(broker, tmp_path):
    """Run as an ordinary user, for whom a root-owned mode-000 folder is unreadable."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv(1) to run as another user")
    home = Path(tempfile.mkdtemp(prefix="maskdoor-unreadable-"))  # reachable by that user
    home.chmod(0o755)
    state = home / "state"
    (state / "outbox").mkdir(parents=True)
    (state / "outbox").chmod(0)
    wrapper = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    probe = subprocess.run([*wrapper, sys.executable, "-c", "import edge.sinks.outbox"],
                           capture_output=True, text=True, cwd=os.getcwd())
    if probe.returncode:
        pytest.skip(f"this checkout cannot be read by uid {NOBODY}: {probe.stderr[-300:]}")
    try:
        stderr, events = run_door(broker, state, wrapper)
    finally:
        shutil.rmtree(home)
    assert_delivered_live_alert(stderr, events)
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Permission denied" in errors[0], stderr[-3000:]
    assert "cannot be opened" in errors[0] and "then restart" in errors[0]


def test_littered_outbox(broker, tmp_path):
    """A bad counter, a foreign file, an empty and a truncated entry among two good ones."""
    outbox = tmp_path / "state" / "outbox"
    outbox.mkdir(parents=True)
    (outbox / "dropped").write_text("abc")
    (outbox / "notes.json").write_text("the installer's notes")
    (outbox / "000000000001.json").write_bytes(event(1))
    (outbox / "000000000002.json").write_bytes(b"")
    (outbox / "000000000003.json").write_bytes(event(3)[:20])
    (outbox / "000000000004.json").write_bytes(event(4))
    (outbox / "000000000005.json.tmp").write_bytes(event(5)[:9])
    stderr, events = run_door(broker, tmp_path / "state")
    assert_delivered_live_alert(stderr, events)
    assert [e["id"] for e in events][:2] == ["queued-1", "queued-4"]
    assert len(events) == 3, "nothing else was sent as an event"
    for name in ("000000000002.json", "000000000003.json"):
        said = [line for line in stderr.splitlines() if name in line]
        assert len(said) == 1 and "quarantine" in said[0], stderr[-3000:]
        assert (outbox / "quarantine" / name).is_file()
    assert sum("'abc'" in line and "starts again at 0" in line
               for line in stderr.splitlines()) == 1
    assert (outbox / "notes.json").read_text() == "the installer's notes"
    assert sorted(os.listdir(outbox)) == ["dropped", "notes.json", "quarantine"]
    assert (outbox / "dropped").read_text() == "0"


def test_the_door_still_lights_and_beeps_without_a_usable_state_folder(broker, mock_pins,
                                                                         tmp_path):
    from conftest import on_periods
    from edge import config
    from edge.service import run
    cfg = config.load(None, {"camera.source": "demo", "mqtt.url": broker.url,
                             "mqtt.device_id": "door9",
                             "service.state_dir": str(tmp_path / "a-file" / "state"),
                             "gpio.alert_s": 0.2, "gpio.beep_on_s": 0.02,
                             "gpio.beep_off_s": 0.02})
    # the folder becomes unusable after the config was checked (a disk remounted, a file put in
    # the way): the door must run on
    (tmp_path / "a-file").write_text("")
    sub = Subscriber(broker.url, ["maskdoor/door9/events"])
    try:
        assert run(cfg) == 0
        assert sub.wait(lambda: sub.on("/events"), timeout=10)
    finally:
        sub.close()
    assert on_periods(mock_pins.pin(17)), "the red LED lit"
    assert len(on_periods(mock_pins.pin(27))) == 3, "three beeps"
