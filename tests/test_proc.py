"""/proc as the unit mounts it: the models still get XNNPACK and run as fast as without the unit.

systemd's ``ProtectProc=`` and ``ProcSubset=`` remount /proc for the service with ``hidepid=``
and ``subset=``. ``subset=pid`` hides /proc/cpuinfo, which LiteRT's XNNPACK needs: without it no
delegate is created and inference is about fifty times slower. These tests remount /proc in a
private mount namespace exactly as the shipped unit asks and run the real appliance there.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

UNIT = ROOT / "systemd" / "maskdoor.service"
EXE = str(Path(sys.executable).parent / "maskdoor")
XNNPACK = "Created TensorFlow Lite XNNPACK delegate for CPU."
FRAMES = 150


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit, values in order (a key may repeat)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"([A-Za-z]+)=(.*)$", line.strip())
        if m:
            out.setdefault(m.group(1), []).append(m.group(2).strip())
    return out


def proc_mount_options(text: str) -> str:
    """The /proc mount options systemd uses for this unit (ProtectProc=, ProcSubset=)."""
    unit = unit_settings(text)
    opts = []
    protect = unit.get("ProtectProc", ["default"])[-1]
    if protect != "default":
        opts.append(f"hidepid={protect}")
    if unit.get("ProcSubset", ["all"])[-1] == "pid":
        opts.append("subset=pid")
    return ",".join(opts)


UNIT_PROC = proc_mount_options(UNIT.read_text())

# Runs its arguments in a private mount namespace whose /proc is remounted with $PROC_OPTS, and
# first prints the new /proc mount line, so the test can see that the remount took effect.
IN_UNIT_PROC = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t proc -o "$PROC_OPTS" proc /proc || exit 97; '
                'grep "^proc /proc proc " /proc/self/mounts | tail -n 1 >&2; exec "$@"', "in-unit-proc"]


@pytest.fixture(scope="module")
def unit_proc():
    """The command prefix that runs a command under the unit's /proc; skips where mount
    namespaces are not allowed (not root, or a container without CAP_SYS_ADMIN)."""
    r = subprocess.run(IN_UNIT_PROC + ["true"], capture_output=True, text=True,
                       env={**os.environ, "PROC_OPTS": UNIT_PROC})
    if r.returncode != 0:
        pytest.skip(f"cannot remount /proc in a private mount namespace here "
                    f"({r.stderr.strip() or r.returncode}); needs root or CAP_SYS_ADMIN")
    return IN_UNIT_PROC


def run_demo(tmp_path: Path, name: str, prefix: list[str]) -> tuple[dict, str]:
    """A real ``maskdoor run --source demo``: its own report (fps) and its stderr."""
    report = tmp_path / f"{name}.json"
    env = {**os.environ, "MASKDOOR_RUN_REPORT": str(report), "PROC_OPTS": UNIT_PROC,
           "GPIOZERO_PIN_FACTORY": "mock"}
    r = subprocess.run(prefix + [EXE, "run", "--source", "demo", "--max-frames", str(FRAMES)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, f"{name}: exit {r.returncode}\n{r.stderr[-2000:]}"
    return json.loads(report.read_text()), r.stderr


def test_unit_keeps_cpuinfo_and_names_device_classes():
    text = UNIT.read_text()
    unit = unit_settings(text)
    assert unit.get("ProtectProc") == ["invisible"]
    assert "pid" not in unit.get("ProcSubset", []), "ProcSubset=pid hides /proc/cpuinfo"
    assert unit.get("DevicePolicy") == ["closed"]
    allowed = {v.split()[0] for v in unit.get("DeviceAllow", [])}
    for cls in ("char-video4linux", "char-media", "char-dma_heap", "char-gpiochip",
                "char-*gpiomem", "char-usb_device", "char-apex"):
        assert cls in allowed, f"DeviceAllow={cls} missing"
    paths = sorted(a for a in allowed if a.startswith("/dev/"))
    assert not paths, f"device paths log a warning where the device is absent: {paths}"


def test_proc_options_follow_the_unit():
    assert proc_mount_options("ProtectProc=invisible\nProcSubset=pid\n") == \
        "hidepid=invisible,subset=pid"
    assert proc_mount_options("ProtectProc=invisible\n") == "hidepid=invisible"
    assert proc_mount_options("") == ""


def test_cpuinfo_readable_under_unit_proc(unit_proc):
    r = subprocess.run(unit_proc + ["cat", "/proc/cpuinfo"], capture_output=True, text=True,
                       env={**os.environ, "PROC_OPTS": UNIT_PROC})
    assert r.returncode == 0, r.stderr
    assert "processor" in r.stdout
    assert "proc /proc proc " in r.stderr and "hidepid=invisible" in r.stderr, r.stderr


def test_subset_pid_would_hide_cpuinfo(unit_proc):
    """The check above can fail: with subset=pid (what the unit must not ask for) cpuinfo goes."""
    r = subprocess.run(unit_proc + ["cat", "/proc/cpuinfo"], capture_output=True, text=True,
                       env={**os.environ, "PROC_OPTS": "hidepid=invisible,subset=pid"})
    assert r.returncode != 0 and "subset=pid" in r.stderr, r.stderr


def test_models_as_fast_under_unit_proc(unit_proc, tmp_path):
    """XNNPACK in both runs, and the unit's /proc costs under 20% of the frame rate. The two
    setups alternate twice and each keeps its best run, so a burst of load on a shared machine
    does not decide the ratio."""
    plain, unit = [], []
    for i in range(2):
        report, err = run_demo(tmp_path, f"plain{i}", [])
        assert XNNPACK in err, "no XNNPACK delegate in the plain run:\n" + err[-2000:]
        plain.append(report["fps"])
        report, err = run_demo(tmp_path, f"unit{i}", unit_proc)
        assert "proc /proc proc " in err and "hidepid=invisible" in err, err[:2000]
        assert "Error in cpuinfo" not in err, err[-2000:]
        assert XNNPACK in err, f"no XNNPACK delegate under /proc {UNIT_PROC}:\n" + err[-2000:]
        unit.append(report["fps"])
        assert report["frames"] == FRAMES
    ratio = max(unit) / max(plain)
    print(f"fps plain {plain}, under /proc {UNIT_PROC} {unit}: ratio {ratio:.2f}")
    assert ratio >= 0.8, f"fps under the unit's /proc {unit} vs plain {plain}"
