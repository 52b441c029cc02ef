"""One validated configuration tree, read from TOML.

Every key has a default (so an empty file is valid) and a one-line description. Unknown keys
and bad values stop start-up; every problem is reported at once, one line each, naming the key
and what to write instead. ``maskdoor run``, ``maskdoor check`` and ``maskdoor config --check``
all read the configuration here, command-line overrides included, so they say the same thing.
``maskdoor config --print-default`` prints the whole tree with its descriptions.
"""

from __future__ import annotations

import difflib
import getpass
import math
import os
import re
import socket
import ssl
import stat
import tomllib
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from edge.defaults import DOOR
from edge.errors import ConfigError
from models import CLASSIFIERS, DETECTORS

DEFAULT_PATH = Path("/etc/maskdoor/config.toml")
MAX_FILE_BYTES = 1 << 20  # a config file is a few kB; this bounds reading a wrong path


@dataclass(frozen=True)
class Field:
    default: Any
    kind: type
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    models: tuple | None = None  # shipped model names; any other value must be a .tflite/.json path
    check: Callable[[Any], str | None] | None = None  # the value's meaning: None or what is wrong
    secret: bool = False  # never shown in a message


@dataclass(frozen=True)
class Section:
    help: str
    fields: dict[str, Field]


# --- what a value must mean, beyond its type and range -------------------------------------------
# Each check takes a value of the right type and returns None, or what is wrong and the fix.

DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
TOPIC_MAX = 100
CAMERA_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
SYSTEM_TREES = (Path("/proc"), Path("/sys"), Path("/dev"))
CAMERA_FIX = ("write 'demo', 'picamera2', 'usb:N' (N the camera number, e.g. usb:0), an rtsp:// "
              "or http(s):// URL, or the path of a video file or a folder of images")
BROKER_FIX = "write mqtt://HOST:PORT (or mqtts://HOST:PORT for TLS)"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _odd_characters(value: str) -> list[str]:
    """Spaces, control and other unprintable characters in ``value``, as they would be typed."""
    return sorted({repr(c) for c in value if c.isspace() or not c.isprintable()})


def _topic_levels(value: str) -> str | None:
    """mqtt.prefix and mqtt.discovery_prefix: one or more MQTT topic levels."""
    rule = (f"write one or more topic levels joined by '/' (e.g. 'maskdoor' or 'home/door'), "
            f"at most {TOPIC_MAX} characters, without '+', '#', spaces or control characters")
    if not value:
        return f"must not be empty; {rule}"
    if len(value) > TOPIC_MAX:
        return f"is {len(value)} characters long; {rule}"
    bad = sorted({repr(c) for c in value if c in "+#"}) + _odd_characters(value)
    if bad:
        return f"contains {', '.join(bad)}; {rule}"
    if value.startswith("$"):
        return f"topics starting with '$' are the broker's own; {rule}"
    if "" in value.split("/"):
        return f"has an empty level (a leading, trailing or doubled '/'); {rule}"
    return None


def _device_id(value: str) -> str | None:
    if value == "" or DEVICE_ID.fullmatch(value):
        return None
    return ("use 1 to 64 letters A-Z or a-z, digits, '_' or '-' (empty: the hostname): the id "
            "is one MQTT topic level and names the Home Assistant device, which allow no other "
            "characters")


def hostname_device_id() -> str:
    """The device id when mqtt.device_id is empty: the host name, made a valid id."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0])[:64]
    return name or "maskdoor"


def _broker_url(value: str) -> str | None:
    if not value:
        return None
    if _odd_characters(value):
        return f"contains spaces or control characters; {BROKER_FIX}"
    from edge.errors import BrokerURLError
    from edge.sinks.mqtt import parse_url
    try:
        parse_url(value)
    except ValueError as exc:
        reason = str(exc)
        own = f"mqtt.url = {value!r}: "
        if reason.startswith(own):
            reason = reason[len(own):]
        return reason if isinstance(exc, BrokerURLError) else f"{reason}; {BROKER_FIX}"
    return None


def _camera_source(value: str) -> str | None:
    src = value.strip()
    if not src:
        return f"is empty; {CAMERA_FIX}"
    if src.startswith("usb:"):
        if not re.fullmatch(r"[0-9]{1,3}", src[4:]):
            return "write usb:N with N the camera number (0 for /dev/video0), e.g. usb:0"
    elif "://" in src:
        if _odd_characters(src):
            return f"a URL cannot hold spaces or control characters; {CAMERA_FIX}"
        try:
            url = urlsplit(src)
            _ = url.port  # a port that is not a number in 0-65535 raises ValueError
        except ValueError as exc:
            return f"not a valid URL ({exc}); {CAMERA_FIX}"
        if url.scheme not in CAMERA_SCHEMES:
            return (f"'{url.scheme}://' streams are not read here; use "
                    f"{', '.join(s + '://' for s in CAMERA_SCHEMES)}, or a file path")
        if not url.hostname:
            return f"names no host; write e.g. {url.scheme}://HOST:PORT/PATH"
    return None


def _regular_file(value: str) -> tuple[str | None, bytes]:
    """(None, the first bytes) for a readable regular file, else (what is wrong, b'')."""
    tree = _system_tree(Path(os.path.realpath(value)))
    if tree:  # kernel files look regular, and some block when read
        return f"is under {tree}, which is the kernel's; name an ordinary file", b""
    try:
        info = os.stat(value)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            return f"is {kind}; name a file", b""
        with open(value, "rb") as fh:
            return None, fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return "no such file; name an existing file, or leave it empty", b""
    except PermissionError:
        return f"cannot be read by user {_user()}; make it readable by that user", b""
    except OSError as exc:
        return f"cannot be read ({exc.strerror})", b""


def _password_file(value: str) -> str | None:
    if not value:
        return None
    wrong, data = _regular_file(value)
    if wrong:
        return wrong
    if len(data) > 4096:
        return "is too large to hold a password; name the file that holds only the password"
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "is not UTF-8 text; save the password as UTF-8"
    if not text:
        return "is empty; write the password into it"
    if "\0" in text:
        return "holds a NUL character, which MQTT passwords cannot contain"
    return None


def _ca_certs(value: str) -> str | None:
    if not value:
        return None
    wrong, _ = _regular_file(value)
    if wrong:
        return wrong
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=value)
    except (ssl.SSLError, OSError) as exc:
        return f"holds no usable CA certificate ({exc}); name a PEM file of CA certificates"
    return None


def _system_tree(path: Path) -> Path | None:
    for tree in SYSTEM_TREES:
        if path == tree or tree in path.parents:
            return tree
    return None


def _state_dir(value: str) -> str | None:
    if not value:
        return None
    path = Path(value)
    if not path.is_absolute():
        return "write an absolute path, e.g. /var/lib/maskdoor"
    real = Path(os.path.realpath(path))
    tree = _system_tree(path) or _system_tree(real)
    if tree:
        return (f"is under {tree}, which is the kernel's, not a place for files; use e.g. "
                "/var/lib/maskdoor")
    existing = _nearest_existing(real)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder; name a folder"
    return None


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


SCHEMA: dict[str, Section] = {
    "camera": Section("Where frames come from.", {
        "source": Field("demo", str, "'picamera2', 'usb:N' (OpenCV camera N), a video file, an "
                        "rtsp:// or http:// URL, a folder of images, or 'demo' (bundled clip)",
                        check=_camera_source),
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
        "model": Field(DOOR.detector, str, "'door': the shipped 256x256 detector, for faces close to the "
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
        "runtime": Field("auto", str, "TFLite interpreter of both models: 'auto' (LiteRT, else "
                         "tflite-runtime)", choices=("auto", "litert", "tflite-runtime")),
        "motion_gate": Field(True, bool, "skip the detector on frames where nothing moved "
                             "(the last faces stand)"),
        "motion_threshold": Field(0.005, float, "fraction of a small grey frame that must change "
                                  "to count as motion", 0.0, 1.0),
        "force_every": Field(15, int, "with motion gating, still detect every N frames", 1, 10000),
        "every": Field(1, int, "run the detector and classifier on every N-th frame only; on "
                       "the frames between, the tracker moves the faces at their speed", 1, 30),
    }),
    "classifier": Section("The mask classifier.", {
        "model": Field(DOOR.classifier, str, "'single': the shipped 96 px model (fits a 10 ms frame "
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
        "red_led": Field(17, int, "BCM pin of the red LED (-1: none)", -1, 53),
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
                     "to stdout as JSON lines)", check=_broker_url),
        "prefix": Field("maskdoor", str, "first level(s) of every topic, e.g. 'maskdoor' or "
                        "'home/door' (no '+', '#' or spaces)", check=_topic_levels),
        "device_id": Field("", str, "level after the prefix in every topic, and the Home Assistant "
                           "device: letters, digits, '_' and '-' (empty: the hostname)",
                           check=_device_id),
        "username": Field("", str, "broker user name (empty: anonymous)"),
        "password": Field("", str, "broker password", secret=True),
        "password_file": Field("", str, "file holding the password (instead of password)",
                               check=_password_file),
        "ca_certs": Field("", str, "CA bundle for TLS (empty: the system's)", check=_ca_certs),
        "keepalive_s": Field(30, int, "MQTT keepalive", 5, 3600),
        "stats_interval_s": Field(60.0, float, "seconds between stats messages (0: none)", 0, 86400),
        "snapshot": Field(False, bool, "publish a JPEG of each alert frame (privacy: off)"),
        "homeassistant": Field(True, bool, "announce entities by Home Assistant MQTT discovery"),
        "discovery_prefix": Field("homeassistant", str, "Home Assistant discovery prefix",
                                  check=_topic_levels),
        "area": Field("", str, "Home Assistant area suggested for the door's device, e.g. "
                      "'Entrance' (empty: none)"),
        "qos": Field(2, int, "MQTT QoS of alert events: 2 delivers each exactly once, also through "
                     "broker restarts; 1 (at least once) for brokers without QoS 2, where a "
                     "subscriber may see an event twice (same id)", 1, 2),
        "queue_max": Field(1000, int, "events kept on disk while the broker is away; the oldest "
                           "beyond this are dropped and counted", 1, 1000000),
    }),
    "preview": Section("The live view: a web page to aim the camera and tune the distance.", {
        "enabled": Field(False, bool, "serve the live view (it shows the camera live)"),
        "bind": Field("127.0.0.1", str, "address to listen on; any but 127.0.0.1 needs a "
                      "password (or keep it and use ssh -L 8080:127.0.0.1:8080)"),
        "port": Field(8080, int, "TCP port (0: any free one, logged)", 0, 65535),
        "password": Field("", str, "HTTP Basic password, any user name (empty: loopback only)",
                          secret=True),
        "fps": Field(4.0, float, "frames a second sent to viewers", 0.2, 30),
        "jpeg_quality": Field(70, int, "JPEG quality of the view", 10, 100),
        "max_viewers": Field(3, int, "streams open at once (they share one encode a frame)",
                             1, 20),
    }),
    "service": Section("Running as a service.", {
        "state_dir": Field("", str, "where the event queue lives (empty: $STATE_DIRECTORY, else "
                           "$XDG_STATE_HOME/maskdoor, else ~/.local/state/maskdoor)",
                           check=_state_dir),
        "log_level": Field("INFO", str, "DEBUG, INFO, WARNING or ERROR",
                           choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    }),
}


def _section_type(name: str, section: Section) -> type:
    """A frozen dataclass with one typed attribute per key of ``section``."""
    return make_dataclass(f"{name.capitalize()}Config",
                          [(key, field.kind) for key, field in section.fields.items()],
                          frozen=True, namespace={"__doc__": section.help})


# What :func:`load` returns: ``cfg.camera.source``, ``cfg.mqtt.url``..., typed and immutable.
SECTIONS: dict[str, type] = {name: _section_type(name, s) for name, s in SCHEMA.items()}
Config = make_dataclass("Config", list(SECTIONS.items()), frozen=True,
                        namespace={"__doc__": "The validated configuration, one section per "
                                              "[table] of the file."})


# --- validation ----------------------------------------------------------------------------------

KIND_NAMES = {str: "a quoted string", int: "a whole number", float: "a number",
              bool: "true or false"}


def _show(value: Any) -> str:
    """``value`` as a message shows it: short and on one line, whatever it is."""
    if isinstance(value, bool):
        return _toml(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else f"a {value.bit_length()}-bit number"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if len(value) > 200:
            return f"{value[:160]!r}... ({len(value)} characters)"
        return repr(value)
    return {dict: "a table", list: "an array"}.get(type(value), f"a {type(value).__name__}")


def _name(name: str) -> str:
    """A key or section name as written, quoted; odd or very long names shortened."""
    return f"'{name}'" if len(name) <= 48 and not _odd_characters(name) else _show(name)


def _check(field: Field, value: Any) -> tuple[Any, str | None]:
    """(the value, None) if ``value`` is good for ``field``, else (None, what is wrong)."""
    kind = field.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if value.bit_length() < 1000 else math.inf if value > 0 else -math.inf
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        return None, f"expected {KIND_NAMES[kind]} (default: {_toml(field.default)})"
    between = (f"between {field.minimum} and {field.maximum}"
               if field.minimum is not None and field.maximum is not None else "")
    if kind is float and not math.isfinite(value):
        return None, f"must be a finite number {between}".rstrip()
    if field.minimum is not None and value < field.minimum or \
            field.maximum is not None and value > field.maximum:
        return None, f"must be {between}"
    if kind is str and "\0" in value:
        return None, "contains a NUL character, which no setting may hold"
    if field.choices and value not in field.choices:
        capitals = value.upper() in field.choices
        hint = f"; write it in capitals: '{value.upper()}'" if capitals else ""
        return None, f"must be one of {', '.join(field.choices)}{hint}"
    if field.models and value and value not in field.models and \
            Path(value).suffix not in (".tflite", ".json"):
        near = difflib.get_close_matches(value, field.models, n=1) if len(value) <= 64 else []
        hint = f"; did you mean '{near[0]}'?" if near else ""
        return None, (f"neither a shipped model ({', '.join(field.models)}) nor the path of a "
                      f".tflite or .json{hint}")
    reason = field.check(value) if field.check else None
    return (None, reason) if reason else (value, None)


def _unknown(what: str, name: str, known) -> str:
    near = difflib.get_close_matches(name, list(known), n=1) if len(name) <= 64 else []
    hint = f"; did you mean '{near[0]}'?" if near else f"; known: {', '.join(known)}"
    return f"unknown {what} {_name(name)}{hint}"


def _relations(values: dict[str, dict[str, Any]], where: Callable[[str], str]) -> list[str]:
    """Problems between keys that are each valid alone; keys already found bad are skipped."""
    problems = []
    gpio, mqtt, service = values["gpio"], values["mqtt"], values["service"]
    owner: dict[int, str] = {}
    for key in ("red_led", "buzzer", "green_led"):
        pin = gpio.get(key, -1)
        if pin < 0:
            continue
        if pin in owner:
            problems.append(f"{where('gpio.' + key)}: gpio.{key} = {pin}: pin {pin} is already "
                            f"gpio.{owner[pin]}'s; give each part its own pin, or -1 for a part "
                            "that is not fitted")
        else:
            owner[pin] = key
    if mqtt.get("password") and mqtt.get("password_file"):
        problems.append(f"{where('mqtt.password_file')}: mqtt.password_file: mqtt.password is "
                        "set too; keep one of them")
    secret = "password_file" if mqtt.get("password_file") else "password"
    if mqtt.get(secret) and mqtt.get("username") == "":
        problems.append(f"{where('mqtt.' + secret)}: mqtt.{secret}: a password is only sent "
                        "with a user name; set mqtt.username")
    url = mqtt.get("url")
    if url and mqtt.get("ca_certs"):
        from edge.sinks.mqtt import parse_url
        if not parse_url(url)[2]:
            problems.append(f"{where('mqtt.ca_certs')}: mqtt.ca_certs = "
                            f"{_show(mqtt['ca_certs'])}: only used with TLS; write the broker "
                            "as mqtts://HOST:PORT, or leave ca_certs empty")
    if url and service.get("state_dir"):
        folder = _nearest_existing(Path(os.path.realpath(service["state_dir"])))
        if not os.access(folder, os.W_OK | os.X_OK):
            problems.append(f"{where('service.state_dir')}: service.state_dir = "
                            f"{_show(service['state_dir'])}: {folder} is not writable by user "
                            f"{_user()}, and the broker's event queue is kept there; make it "
                            "writable or name another folder")
    return problems


def build(data: dict, origin: str = "config",
          sources: dict[str, str] | None = None) -> Config:
    """Validate ``data`` (as parsed from TOML) against SCHEMA; return ``cfg.section.key``.

    ``sources`` names where a key's value came from when not from ``origin`` (e.g. '--mqtt').
    Every problem found is listed in the one ConfigError raised.
    """
    sources = sources or {}

    def where(dotted: str) -> str:
        return sources.get(dotted, origin)

    problems = []
    for name, given in data.items():
        if name not in SCHEMA:
            problems.append(f"{origin}: " +
                            _unknown("section", f"[{name}]", [f"[{s}]" for s in SCHEMA]))
        elif not isinstance(given, dict):
            problems.append(f"{origin}: {name} = {_show(given)}: '{name}' is a section; write "
                            f"[{name}] with its keys on the lines below")
    values: dict[str, dict[str, Any]] = {}
    for sname, section in SCHEMA.items():
        given = data.get(sname)
        given = given if isinstance(given, dict) else {}
        problems += [f"{where(f'{sname}.{key}')}: [{sname}] " +
                     _unknown("key", key, section.fields)
                     for key in given if key not in section.fields]
        values[sname] = {}
        for key, field in section.fields.items():
            value = given.get(key, field.default)
            good, reason = _check(field, value)
            if reason is None:
                values[sname][key] = good
            elif field.secret:
                problems.append(f"{where(f'{sname}.{key}')}: {sname}.{key}: {reason}")
            else:
                problems.append(f"{where(f'{sname}.{key}')}: {sname}.{key} = {_show(value)}: "
                                f"{reason}")
    problems += _relations(values, where)
    if problems:
        raise ConfigError(problems)
    values["mqtt"]["device_id"] = values["mqtt"]["device_id"] or hostname_device_id()
    return Config(**{s: SECTIONS[s](**v) for s, v in values.items()})


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}. Write one with `maskdoor config "
                          f"--print-default > {path}`, or pass --config.") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; name the TOML file") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot be read by user {_user()}; make it readable by that "
                          "user") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{path}: cannot read ({reason})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: over {MAX_FILE_BYTES >> 20} MiB, too large for a config file; "
                          "is it the right file?")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
                          "save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"{path}: arrays or inline tables nested too deeply to read; no key "
                          "takes nested values") from None
    except ValueError as exc:  # TOMLDecodeError, and integers too long to convert
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
         labels: dict[str, str] | None = None) -> Config:
    """Read the TOML at ``path`` (None: built-in defaults) and apply ``overrides``
    ({'section.key': value}) on top, validating both; ``labels`` names where each override came
    from in messages (e.g. {'mqtt.url': '--mqtt'})."""
    data: dict = {}
    origin = "defaults"
    if path is not None:
        path = Path(path)
        origin = str(path)
        data = _read_toml(path)
    sources = {}
    for dotted, value in (overrides or {}).items():
        sname, key = dotted.split(".", 1)
        section = data.setdefault(sname, {})
        if isinstance(section, dict):  # else the section itself is reported
            section[key] = value
            sources[dotted] = (labels or {}).get(dotted, "override")
    return build(data, origin, sources)


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


def state_dir(cfg: Config) -> Path:
    """The state directory, by the rule in the config description."""
    if cfg.service.state_dir:
        return Path(cfg.service.state_dir)
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "maskdoor"
