"""Run with a Home Assistant venv's python: checks maskdoor's discovery configs with Home
Assistant's own MQTT schemas and renders each value template with its template engine.

Reads {"configs": {topic: config}, "payloads": {state topic: payload}} as JSON on stdin; writes
{topic: {"dropped": [keys the schema drops], "error": str | None, "rendered": str | None}}.
"""

import asyncio
import importlib
import json
import sys

import homeassistant.components.persistent_notification  # noqa: F401  (breaks an import cycle)
from homeassistant.components.mqtt.discovery import MQTT_ORIGIN_INFO_SCHEMA
from homeassistant.core import HomeAssistant
from homeassistant.helpers.template import Template


async def main() -> None:
    given = json.load(sys.stdin)
    hass = HomeAssistant("/tmp")
    out = {}
    for topic, config in given["configs"].items():
        component = topic.split("/")[1]
        schema = importlib.import_module(f"homeassistant.components.mqtt.{component}")
        result = {"dropped": [], "error": None, "rendered": None}
        try:
            valid = schema.DISCOVERY_SCHEMA(dict(config))
            MQTT_ORIGIN_INFO_SCHEMA(config.get("origin", {"name": "-"}))
            result["dropped"] = sorted(set(config) - set(valid))
            payload = given["payloads"].get(config["state_topic"])
            if payload is not None:
                template = Template(config["value_template"], hass)
                result["rendered"] = str(template.async_render_with_possible_json_value(payload))
        except Exception as exc:  # reported to the caller, which fails on it
            result["error"] = f"{type(exc).__name__}: {exc}"
        out[topic] = result
    json.dump(out, sys.stdout)


asyncio.run(main())
