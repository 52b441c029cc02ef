"""The unit file: systemd-analyze verify passes, and its exposure score is what the README says."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

UNIT = ROOT / "systemd" / "maskdoor.service"


@pytest.fixture
def unit_here(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    exe = Path(sys.executable).parent / "maskdoor"
    text = UNIT.read_text().replace("/opt/maskdoor/venv/bin/maskdoor", str(exe))
    p = tmp_path / "maskdoor.service"
    p.write_text(text)
    return p


def test_verify_passes(unit_here):
    r = subprocess.run(["systemd-analyze", "verify", str(unit_here)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "maskdoor.service" not in r.stderr, r.stderr


def test_unit_contract():
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=maskdoor",
                 "SupplementaryGroups=video gpio", "StateDirectory=maskdoor",
                 "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert line in text


def test_exposure_score_matches_readme(unit_here):
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit_here)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout[-500:] + r.stderr
    score = float(m.group(1))
    assert score <= 2.0
    readme = (ROOT / "README.md").read_text()
    assert f"exposure level {score}" in readme, f"README should record exposure level {score}"
