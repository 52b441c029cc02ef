#!/bin/bash
# The README's "Install on a Raspberry Pi" steps, run as root inside an arm64 Debian root file
# system by arm64.sh, from a checkout at /home/pi/maskdoor. Debian lacks Raspberry Pi OS's
# python3-picamera2 and python3-lgpio: python3-pywt (a numpy extension Debian builds against its
# numpy) stands in for picamera2's apt dependencies, the gpio group is made as Raspberry Pi OS has
# it, and the config is edited with sed instead of sudoedit (no GPIO chip: gpio.enabled = false).
#   pi-install.sh install | tflite-runtime | venv | check [RUNTIME] | run [RUNTIME]
set -euo pipefail
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
VENV=/opt/maskdoor/venv
runtime_flag() { [ -z "${1:-}" ] || echo "--runtime $1"; }
versions() {  # one line: Python, numpy (and where from), OpenCV, the interpreters installed
    $VENV/bin/python - <<'EOF'
import importlib.metadata as md
import sys
import cv2, numpy
names = ["ai-edge-litert", "tflite-runtime"]
have = {d.metadata["Name"]: d.version for d in md.distributions() if d.metadata["Name"] in names}
print("versions:", f"Python {sys.version.split()[0]}, numpy {numpy.__version__} from "
      f"{numpy.__file__.split('/numpy/')[0]}, cv2 {cv2.__version__},",
      ", ".join(f"{n} {v}" for n, v in sorted(have.items())))
EOF
}

case $1 in
install)  # the README, step by step
    sudo apt update && sudo apt install -y python3-venv python3-numpy python3-pywt mosquitto-clients
    getent group gpio >/dev/null || sudo groupadd --system gpio
    sudo useradd --system --home /var/lib/maskdoor --shell /usr/sbin/nologin --groups video,gpio maskdoor
    cd /home/pi/maskdoor
    sudo mkdir -p /opt/maskdoor && sudo cp -r . /opt/maskdoor
    sudo python3 -m venv --system-site-packages /opt/maskdoor/venv
    sudo /opt/maskdoor/venv/bin/pip install /opt/maskdoor
    sudo mkdir -p /etc/maskdoor && $VENV/bin/maskdoor config --print-default | sudo tee /etc/maskdoor/config.toml >/dev/null
    sudo sed -i '/^\[gpio\]/,/^\[/ s/^enabled = true/enabled = false/' /etc/maskdoor/config.toml
    versions
    ;;
tflite-runtime)  # the README's tflite-runtime install, in the same venv
    cd /opt/maskdoor
    sudo $VENV/bin/pip install '.[tflite-runtime]'
    versions
    ;;
venv)  # as the service user: the system's numpy, one OpenCV, the apt-built extension beside them
    cd /tmp
    sudo -u maskdoor $VENV/bin/python - <<'EOF'
import importlib.metadata as md
import sys
import cv2, numpy, pywt
from ai_edge_litert import interpreter
site = [d for d in md.distributions() if str(d.locate_file("")).startswith("/opt/maskdoor/venv/")]
numpys = [f"{d.metadata['Name']} {d.version}" for d in site if d.metadata["Name"] == "numpy"]
opencvs = sorted({f"{d.metadata['Name']} {d.version}" for d in md.distributions()
                  if d.metadata["Name"].lower().startswith("opencv")})
problems = []
if not numpy.__file__.startswith("/usr/lib/python3/dist-packages/") or numpys:
    problems.append(f"numpy {numpy.__version__} from {numpy.__file__} (venv: {numpys}), not the system's")
if len(opencvs) != 1 or not cv2.__version__.startswith("4."):
    problems.append(f"OpenCV: {opencvs}, cv2 {cv2.__version__}: want one distribution of major 4")
if problems:
    sys.exit("; ".join(problems))
print(f"numpy {numpy.__version__} from the system, {opencvs[0]}, pywt {pywt.__version__} "
      f"from {pywt.__file__.split('/pywt/')[0]}")
EOF
    ;;
check)
    cd /tmp
    # shellcheck disable=SC2046
    sudo -u maskdoor $VENV/bin/maskdoor check --config /etc/maskdoor/config.toml --source demo $(runtime_flag "${2:-}")
    ;;
run)
    cd /tmp
    # shellcheck disable=SC2046
    sudo -u maskdoor $VENV/bin/maskdoor run --config /etc/maskdoor/config.toml --source demo $(runtime_flag "${2:-}")
    ;;
*)
    echo "pi-install.sh: unknown step '$1'" >&2
    exit 2
    ;;
esac
