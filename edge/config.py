"""One validated configuration tree, read from TOML.

Every key has a default (so an empty file is valid) and a one-line description; unknown keys
and bad values stop start-up with the key's path and what to write instead.
``maskdoor config --print-default`` prints the whole tree with its descriptions.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edge.errors import MaskdoorError
from models import CLASSIFIERS, DETECTORS

DEFAULT_PATH = Path("/etc/maskdoor/config.toml")


class ConfigError(MaskdoorError, ValueError):
    """The configuration file or a command-line override is invalid."""


@dataclass(frozen=True)
class Field:
    default: Any
    kind: type
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    models: tuple | None = None  # shipped model names; any other value must be a .tflite/.json path


@dataclass(frozen=True)
class Section:
    help: str
    fields: dict[str, Field]


SCHEMA: dict[str, Section] = {
    "camera": Section("Where frames come from.", {
        "source": Field("demo", str, "'picamera2', 'usb:N' (OpenCV camera N), a video file, an "
                        "rtsp:// or http:// URL, a folder of images, or 'demo' (bundled clip)"),
        "width": Field(640, int, "capture width in pixels", 64, 4096),
        "height": Field(480, int, "capture height in pixels", 48, 4096),
        "fps": Field(15.0, float, "frames per second asked of the camera", 0.5, 120),
        "realtime": Field(False, bool, "files and folders: pace at fps and drop frames like a live "
                          "camera (live cameras always do)"),
        "loop": Field(False, bool, "files and folders: start again at the end instead of stopping"),
        "reopen_max_s": Field(30.0, float, "longest wait between tries to reopen a lost camera",
                              0.1, 3600),
    }),
    "detector": Section("The SSD face detector.", {
        "model": Field("door", str, "'door': the shipped 256x256 detector, for faces close to the "
                       "door (fastest); 'full': the shipped 448x448 one, which also finds small "
                       "faces far away; 'verified': 'full' with a second look at each proposal "
                       "(more faces, slower); 'accurate': two detectors at 448, plus 544 and 768 "
                       "for small faces, fused, then the second look (the most faces; for "
                       "photos, too slow for a camera); or the path of a "
                       ".tflite or a multi-pass or verified .json",
                       models=tuple(DETECTORS)),
        "threads": Field(1, int, "interpreter CPU threads", 1, 64),
        "threshold": Field(0.0, float, "face score threshold (0: the model's own, chosen on val)",
                           0.0, 1.0),
        "edgetpu": Field(False, bool, "run on a Coral Edge TPU (needs libedgetpu1-std)"),
        "motion_gate": Field(True, bool, "skip the detector on frames where nothing moved "
                             "(the last faces stand)"),
        "motion_threshold": Field(0.005, float, "fraction of a small grey frame that must change "
                                  "to count as motion", 0.0, 1.0),
        "force_every": Field(15, int, "with motion gating, still detect every N frames", 1, 10000),
        "every": Field(1, int, "run the detector and classifier on every N-th frame only; on "
                       "the frames between, the tracker moves the faces at their speed", 1, 30),
    }),
    "classifier": Section("The mask classifier.", {
        "model": Field("single", str, "'single': the shipped 96 px model (fits a 10 ms frame "
                       "with the 'door' detector); 'pair': the 96 px and 160 px models averaged "
                       "(fewer wrong verdicts, about 3.5x the classifier time); or the path of a "
                       ".tflite or ensemble .json", models=tuple(CLASSIFIERS)),
        "threads": Field(1, int, "interpreter CPU threads", 1, 64),
        "edgetpu": Field(False, bool, "run on a Coral Edge TPU"),
    }),
    "tracker": Section("One identity per person across frames.", {
        "iou": Field(0.3, float, "least box overlap that continues a track", 0.01, 1.0),
        "max_missed": Field(10, int, "frames a track survives without its face", 0, 1000),
        "votes": Field(7, int, "recent frames whose verdicts are voted on", 1, 100),
    }),
    "policy": Section("When the door warns.", {
        "min_face_width_frac": Field(0.10, float, "a face this wide (fraction of frame width) or "
                                     "wider is close enough to warn", 0.0, 1.0),
        "unmasked_frames": Field(5, int, "consecutive close, unmasked frames before an alert", 1,
                                 1000),
        "alarm_on_incorrect_mask": Field(True, bool, "a mask below the nose warns too"),
        "cooldown_s": Field(60.0, float, "after an alert, a person found again in about the same "
                            "place is not warned again for this long", 0.0, 86400),
    }),
    "gpio": Section("Red LED, buzzer and optional green LED (BCM pin numbers).", {
        "enabled": Field(True, bool, "drive the pins (off: no LED or buzzer)"),
        "red_led": Field(17, int, "BCM pin of the red LED", 0, 53),
        "buzzer": Field(27, int, "BCM pin of the buzzer (-1: none)", -1, 53),
        "green_led": Field(-1, int, "BCM pin of a green LED lit while the nearest person is "
                           "masked (-1: none)", -1, 53),
        "active_high": Field(True, bool, "false if the parts switch on when the pin is low"),
        "alert_s": Field(5.0, float, "how long the red LED stays on after an alert", 0.1, 600),
        "beeps": Field(3, int, "buzzer beeps per alert", 0, 100),
        "beep_on_s": Field(0.15, float, "length of one beep", 0.01, 10),
        "beep_off_s": Field(0.15, float, "pause between beeps", 0.01, 10),
    }),
    "mqtt": Section("Alerts for remote subscribers.", {
        "url": Field("", str, "broker, mqtt://HOST:PORT or mqtts://HOST:PORT (empty: events go "
                     "to stdout as JSON lines)"),
        "prefix": Field("maskdoor", str, "first level of every topic"),
        "device_id": Field("", str, "second level of every topic (empty: the hostname)"),
        "username": Field("", str, "broker user name (empty: anonymous)"),
        "password": Field("", str, "broker password"),
        "password_file": Field("", str, "file holding the password (instead of password)"),
        "ca_certs": Field("", str, "CA bundle for TLS (empty: the system's)"),
        "keepalive_s": Field(30, int, "MQTT keepalive", 5, 3600),
        "stats_interval_s": Field(60.0, float, "seconds between stats messages (0: none)", 0, 86400),
        "snapshot": Field(False, bool, "publish a JPEG of each alert frame (privacy: off)"),
        "homeassistant": Field(True, bool, "announce entities by Home Assistant MQTT discovery"),
        "discovery_prefix": Field("homeassistant", str, "Home Assistant discovery prefix"),
        "area": Field("", str, "Home Assistant area suggested for the door's device, e.g. "
                      "'Entrance' (empty: none)"),
        "queue_max": Field(1000, int, "events kept on disk while the broker is away; the oldest "
                           "beyond this are dropped and counted", 1, 1000000),
    }),
    "service": Section("Running as a service.", {
        "state_dir": Field("", str, "where the event queue lives (empty: $STATE_DIRECTORY, else "
                           "$XDG_STATE_HOME/maskdoor, else ~/.local/state/maskdoor)"),
        "log_level": Field("INFO", str, "DEBUG, INFO, WARNING or ERROR",
                           choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    }),
}


def _check(path: str, field: Field, value: Any) -> Any:
    kind = field.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is bool and not isinstance(value, bool) or \
            kind is not bool and (isinstance(value, bool) or not isinstance(value, kind)):
        names = {str: "a quoted string", int: "a whole number", float: "a number",
                 bool: "true or false"}
        raise ConfigError(f"{path} = {value!r}: expected {names[kind]} "
                          f"(default: {_toml(field.default)})")
    if field.minimum is not None and value < field.minimum or \
            field.maximum is not None and value > field.maximum:
        raise ConfigError(f"{path} = {value!r}: must be between {field.minimum} and {field.maximum}")
    if field.choices and value not in field.choices:
        raise ConfigError(f"{path} = {value!r}: must be one of {', '.join(field.choices)}")
    if field.models and value and value not in field.models and \
            Path(value).suffix not in (".tflite", ".json"):
        near = difflib.get_close_matches(value, field.models, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError(f"{path} = {value!r}: neither a shipped model "
                          f"({', '.join(field.models)}) nor the path of a .tflite or .json{hint}")
    return value


def _unknown(what: str, name: str, known) -> ConfigError:
    near = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean '{near[0]}'?" if near else f"; known: {', '.join(known)}"
    return ConfigError(f"unknown {what} '{name}'{hint}")


def build(data: dict, origin: str = "config") -> SimpleNamespace:
    """Validate ``data`` (as parsed from TOML) against SCHEMA; return ``cfg.section.key``."""
    out = SimpleNamespace()
    for name in data:
        if name not in SCHEMA:
            raise ConfigError(f"{origin}: " + str(_unknown("section", f"[{name}]", [f"[{s}]" for s in SCHEMA])))
        if not isinstance(data[name], dict):
            raise ConfigError(f"{origin}: '{name}' must be a section [{name}], not a value")
    for sname, section in SCHEMA.items():
        given = data.get(sname, {})
        for key in given:
            if key not in section.fields:
                raise ConfigError(f"{origin}: [{sname}] " + str(_unknown("key", key, section.fields)))
        values = {key: _check(f"{origin}: {sname}.{key}", f, given.get(key, f.default))
                  for key, f in section.fields.items()}
        setattr(out, sname, SimpleNamespace(**values))
    return out


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> SimpleNamespace:
    """Read the TOML at ``path`` (None: built-in defaults) and apply ``overrides``
    ({'section.key': value}) on top, validating both."""
    data: dict = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}. Write one with `maskdoor config "
                              f"--print-default > {path}`, or pass --config.") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    for dotted, value in (overrides or {}).items():
        sname, key = dotted.split(".", 1)
        data.setdefault(sname, {})[key] = value
    return build(data, origin)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def default_toml() -> str:
    lines = ["# maskdoor configuration. Every key is optional: what is left out keeps the",
             "# default shown here. Unknown keys stop start-up, naming the key.", ""]
    for sname, section in SCHEMA.items():
        lines += [f"# {section.help}", f"[{sname}]"]
        for key, f in section.fields.items():
            lines += [f"# {f.help}", f"{key} = {_toml(f.default)}"]
        lines.append("")
    return "\n".join(lines)


def state_dir(cfg: SimpleNamespace) -> Path:
    """The state directory, by the rule in the config description."""
    if cfg.service.state_dir:
        return Path(cfg.service.state_dir)
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "maskdoor"
