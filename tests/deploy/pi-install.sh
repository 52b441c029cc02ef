#!/bin/bash
# The README's "Install on a Raspberry Pi" steps, run as root inside an arm64 Debian rootfs by
# arm64.sh, from a checkout at /home/pi/maskdoor. Debian lacks Raspberry Pi OS's
# python3-picamera2 and python3-lgpio: an apt-built numpy extension stands in for picamera2's
# apt dependencies, the gpio group is made as Raspberry Pi OS has it, and the config is edited
# with sed instead of sudoedit (no GPIO chip here: gpio.enabled = false).
#   pi-install.sh install STANDIN_PACKAGE | tflite-runtime | standin | check [RUNTIME] | run [RUNTIME]
set -euo pipefail
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
MASKDOOR=/opt/maskdoor/venv/bin/maskdoor
os_numpy() { python3 -c 'import numpy; print(numpy.__version__)'; }
runtime_flag() { [ -z "${1:-}" ] || echo "--runtime $1"; }

case $1 in
install)
    standin=$2
    # README, step by step (python3-picamera2 and python3-lgpio: Raspberry Pi OS only)
    sudo apt-get update -q
    sudo apt-get install -y -q python3-venv python3-numpy mosquitto-clients "$standin"
    getent group gpio >/dev/null || sudo groupadd --system gpio
    id maskdoor >/dev/null 2>&1 || sudo useradd --system --home /var/lib/maskdoor \
        --shell /usr/sbin/nologin --groups video,gpio maskdoor
    sudo rm -rf /opt/maskdoor
    cd /home/pi
    sudo cp -r maskdoor /opt/maskdoor
    sudo python3 -m venv --system-site-packages /opt/maskdoor/venv
    sudo /opt/maskdoor/venv/bin/pip install /opt/maskdoor "numpy==$(os_numpy)"
    sudo mkdir -p /etc/maskdoor
    $MASKDOOR config --print-default | sudo tee /etc/maskdoor/config.toml >/dev/null
    sudo sed -i '/^\[gpio\]/,/^\[/ s/^enabled = true/enabled = false/' /etc/maskdoor/config.toml
    /opt/maskdoor/venv/bin/python - <<'EOF'
import importlib.metadata as md
import sys
import numpy, cv2
names = ["ai-edge-litert", "opencv-python-headless", "tflite-runtime"]
have = {n: md.version(n) for n in names if any(d.metadata["Name"] == n for d in md.distributions())}
print("versions:", f"Python {sys.version.split()[0]}, numpy {numpy.__version__} from {numpy.__file__.split('/numpy/')[0]},",
      f"cv2 {cv2.__version__},", ", ".join(f"{n} {v}" for n, v in have.items()))
EOF
    ;;
tflite-runtime)
    sudo /opt/maskdoor/venv/bin/pip install "/opt/maskdoor[tflite-runtime]" "numpy==$(os_numpy)"
    ;;
standin)  # the apt-built extension, imported from the venv beside maskdoor's packages
    sudo -u maskdoor /opt/maskdoor/venv/bin/python -c '
import cv2, numpy, pywt
from ai_edge_litert import interpreter
print(f"pywt {pywt.__version__} on numpy {numpy.__version__}, cv2 {cv2.__version__}")'
    ;;
check)
    cd /tmp
    # shellcheck disable=SC2046
    sudo -u maskdoor $MASKDOOR check --config /etc/maskdoor/config.toml --source demo $(runtime_flag "${2:-}")
    ;;
run)
    cd /tmp
    # shellcheck disable=SC2046
    sudo -u maskdoor $MASKDOOR run --config /etc/maskdoor/config.toml --source demo $(runtime_flag "${2:-}")
    ;;
*)
    echo "pi-install.sh: unknown step '$1'" >&2
    exit 2
    ;;
esac
