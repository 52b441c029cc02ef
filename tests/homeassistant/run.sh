#!/bin/sh
# maskdoor against a real Home Assistant on loopback (see check_ha.py for what is checked).
# usage: tests/homeassistant/run.sh [HA_VENV]   (or HA_VENV=... in the environment)
# HA_VENV: a venv with homeassistant installed (2024.1.6 is the last for Python 3.11):
#   python3.11 -m venv /opt/ha-venv && /opt/ha-venv/bin/pip install homeassistant==2024.1.6 \
#       paho-mqtt==1.6.1 janus==1.0.0
# MASKDOOR: the maskdoor command to run (default: the one on PATH).
venv="${1:-${HA_VENV:-}}"
if [ -z "$venv" ] || [ ! -x "$venv/bin/hass" ]; then
    echo "SKIP: no Home Assistant venv given or found (tests/homeassistant/run.sh /path/to/venv)"
    exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
exec "$venv/bin/python" "$here/check_ha.py" --hass "$venv/bin/hass" \
    --maskdoor "${MASKDOOR:-$(command -v maskdoor || echo maskdoor)}" ${KEEP:+--keep}
