"""Property-based fuzz of the configuration: TOML documents built from the real schema's sections
and keys with mutated values. Each must give a valid config that keeps every rule, or one
ConfigError naming the file; never any other exception, and never a traceback from the command.
"""

import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edge import config

EXE = str(Path(sys.executable).parent / "maskdoor")
PASSWORD = "271828182"  # the secret in mqtt.password: never to appear in a message
PASSWORDS = [f'"{PASSWORD}"', PASSWORD, f"[{PASSWORD}]", f'"{PASSWORD}\\u0000"',
             f"{{ p = {PASSWORD} }}"]
FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_CLI = settings(FUZZ, max_examples=10)


def toml_string(s: str) -> str:
    """A TOML basic string of ``s``; a lone surrogate is escaped too, making the file invalid."""
    def escape(c: str) -> str:
        if c in '"\\':
            return "\\" + c
        code = ord(c)
        return f"\\u{code:04x}" if code < 0x20 or code == 0x7F or 0xD800 <= code < 0xE000 else c
    return '"' + "".join(map(escape, s)) + '"'


ODD_STRINGS = ["", " ", "+", "#", "a/b", "/", "$SYS", "front door", "door\x00", "\x1b[31m",
               "ü-door", "door\u200b", "x" * 70000, "mqtt://127.0.0.1:99999", "mqtt://h:abc",
               "mqtt://[::1", "http://x", "mqtts://h", "mqtt://a b", "usb:abc", "usb:0", "usb:-1",
               "rtsp://", "ftp://x/y", "/proc/self/status", "/proc/kmsg", "/sys/x", "/dev/zero",
               "/dev/null", "/", "/etc/hostname", "relative/dir", "DEBUG", "info", "door", "pair",
               "x.tflite", "../../etc/passwd", "\ud800", "🙂", "\t", "a\nb"]
NUMBERS = ["nan", "+nan", "-nan", "inf", "-inf", "+inf", "0", "-1", "-0.0", "1e308", "1e400",
           "-1e400", "9223372036854775807", "-9223372036854775808", "0x7fffffff", "1_000",
           "0.5", "53", "54", "65535", "1e-320"]
OTHERS = ["true", "false", "[]", "[1, 2]", "{}", "{a = 1}", "1979-05-27T07:32:00Z",
          "1979-05-27", "07:32:00", "'literal'", '"""multi\nline"""', "{a = {b = {c = [1]}}}",
          *("[" * n + "]" * n for n in (50, 400, 5000)), "{a = " * 3000 + "1" + "}" * 3000]


def values(field: config.Field | None):
    """TOML value text: the field's own kind in and out of range, and every other kind."""
    own = []
    if field is not None:
        own.append(st.just(config._toml(field.default)))
        if field.kind is int:
            edges = [field.minimum - 1, field.minimum, field.maximum, field.maximum + 1]
            own += [st.integers(-2**70, 2**70).map(str),
                    st.sampled_from([*edges, -1, 17, 27]).map(str)]  # 17, 27: the default pins
        elif field.kind is float:
            own.append(st.sampled_from(["nan", "-nan", "inf", "-inf", "1e400",
                                        repr(field.maximum * 1.5 + 1)]))
            own.append(st.floats(allow_nan=True, allow_infinity=True).map(
                lambda f: "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")
                if math.isinf(f) else repr(f)))
        elif field.choices or field.models:
            own.append(st.sampled_from(field.choices or field.models).map(toml_string))
        elif field.kind is str:
            own.append(st.sampled_from(ODD_STRINGS).map(toml_string))
    return st.one_of(*own, st.sampled_from(NUMBERS), st.sampled_from(OTHERS),
                     st.sampled_from(ODD_STRINGS).map(toml_string),
                     st.text(max_size=30).map(toml_string))


NAMES = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)


KEYS = [(s, k) for s, section in config.SCHEMA.items() for k in section.fields]


@st.composite
def one_key(draw) -> bytes:
    """One key with a mutated value, the rest left at their defaults: each check on its own."""
    sname, key = draw(st.sampled_from(KEYS))
    value = (draw(st.sampled_from(PASSWORDS)) if key == "password" else
             draw(values(config.SCHEMA[sname].fields[key])))
    return f"[{sname}]\n{key} = {value}\n".encode()


@st.composite
def many_keys(draw) -> bytes:
    lines = []
    for sname in draw(st.lists(st.sampled_from([*config.SCHEMA, None]), max_size=5, unique=True)):
        if sname is None:  # an unknown section, or a known one written as a value
            if draw(st.booleans()):
                lines.append(f"[{toml_string(draw(NAMES))}]")
            else:
                lines.append(f"{draw(st.sampled_from(list(config.SCHEMA)))} = {draw(values(None))}")
            continue
        lines.append(draw(st.sampled_from([f"[{sname}]"] * 4 + [f"[[{sname}]]"])))
        fields = config.SCHEMA[sname].fields
        for key in draw(st.lists(st.sampled_from([*fields, None]), max_size=6, unique=True)):
            if key is None:
                lines.append(f"{toml_string(draw(NAMES))} = {draw(values(None))}")
            elif key == "password":
                lines.append(f"password = {draw(st.sampled_from(PASSWORDS))}")
            else:
                lines.append(f"{key} = {draw(values(fields[key]))}")
    text = "\n".join(lines).encode()
    mutation = draw(st.sampled_from(["none"] * 12 + ["bytes", "cut", "bom"]))
    if mutation == "bytes":  # raw bytes, mostly not UTF-8
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]
    elif mutation == "cut":
        text = text[:draw(st.integers(0, len(text)))]
    elif mutation == "bom":
        text = b"\xef\xbb\xbf" + text
    return text


@st.composite
def related_keys(draw) -> bytes:
    """The keys checked against each other (pins, broker, credentials, topics), each drawn from
    a few values that are good alone."""
    pins = [draw(st.sampled_from(["-1", "17", "22", "27"])) for _ in range(3)]
    pick = {"url": ["", "mqtt://127.0.0.1", "mqtts://127.0.0.1:8883", "127.0.0.1:1883"],
            "username": ["", "door"], "password": ["", PASSWORD],
            "password_file": ["", "/etc/hostname"], "ca_certs": ["", "/etc/hostname"],
            "prefix": ["maskdoor", "home/door", "a+b", "a/#", "/x", "x/", "$SYS", "a b"],
            "device_id": ["", "door-1", "front/door", "front door", "d\u0000", "ü", "#"],
            "discovery_prefix": ["homeassistant", "ha/x", "+", "ha//x"]}
    mqtt = [f'{k} = "{draw(st.sampled_from(v))}"' for k, v in pick.items()
            if draw(st.booleans())]  # a key left out keeps its (good) default
    state = draw(st.sampled_from(["", "/var/lib/maskdoor", "/proc/x", "/etc/hostname/x", "x"]))
    return ("[gpio]\n" + "\n".join(f"{k} = {v}" for k, v in
                                   zip(("red_led", "buzzer", "green_led"), pins)) +
            "\n[mqtt]\n" + "\n".join(mqtt) + f'\n[service]\nstate_dir = "{state}"\n').encode()


def documents():
    return st.one_of(one_key(), many_keys(), related_keys())


def keeps_every_rule(cfg) -> None:
    """A config that loads obeys what the schema and the checks promise."""
    for sname, section in config.SCHEMA.items():
        for key, field in section.fields.items():
            value = getattr(getattr(cfg, sname), key)
            assert isinstance(value, field.kind) and (field.kind is bool) == isinstance(value, bool)
            if field.kind is float:
                assert math.isfinite(value)
            if field.minimum is not None:
                assert field.minimum <= value <= field.maximum
            if field.kind is str:
                assert "\0" not in value
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cfg.mqtt.device_id)
    for topic in (cfg.mqtt.prefix, cfg.mqtt.discovery_prefix):
        assert topic and not set(topic) & set("+# \0") and "" not in topic.split("/")
    pins = [p for p in (cfg.gpio.red_led, cfg.gpio.buzzer, cfg.gpio.green_led) if p >= 0]
    assert len(pins) == len(set(pins))


def load_or_refuse(path: Path) -> str | None:
    """None if the file is valid, else the ConfigError's message; any other exception fails."""
    try:
        keeps_every_rule(config.load(path))
        event("valid")
        return None
    except config.ConfigError as exc:
        message, problems = str(exc), exc.problems
    whole_file = ("not valid TOML", "not UTF-8", "nested too deeply")
    event(next((f"ConfigError: {w}" for w in whole_file if w in message),
               f"ConfigError: {'one bad key' if len(problems) == 1 else 'several bad keys'}"))
    assert message and PASSWORD not in message
    assert len(message) < 20000, "long values are shortened"
    assert all(line.startswith(str(path)) for line in problems), problems
    return message


def in_a_file(text: bytes, check) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_bytes(text)
        check(path)


@FUZZ
@given(one_key())
def test_any_one_key_is_valid_or_one_clear_error(text):
    in_a_file(text, load_or_refuse)


@FUZZ
@given(documents())
def test_any_document_is_valid_or_one_clear_error(text):
    in_a_file(text, load_or_refuse)


@FUZZ
@given(st.dictionaries(st.sampled_from([f"{s}.{k}" for s, sec in config.SCHEMA.items()
                                        for k in sec.fields]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                 st.text(), st.binary(), st.lists(st.integers(), max_size=3)),
                       max_size=6))
def test_any_python_override_is_valid_or_one_clear_error(overrides):
    """Overrides as Python values (what the command-line flags and callers pass)."""
    try:
        keeps_every_rule(config.load(None, overrides))
        event("valid")
    except config.ConfigError as exc:
        event("ConfigError")
        assert all(line.startswith("override: ") for line in exc.problems), exc.problems


@FUZZ_CLI
@given(documents())
def test_config_check_command_exits_0_or_2_without_a_traceback(text):
    def check(path):
        expected = load_or_refuse(path)
        r = subprocess.run([EXE, "config", "--check", str(path)], capture_output=True,
                           text=True, errors="replace", timeout=60)
        assert "Traceback" not in r.stderr
        if expected is None:
            assert (r.returncode, r.stdout) == (0, f"{path}: valid\n")
        else:
            assert (r.returncode, r.stderr) == (2, f"maskdoor config: {expected}\n")
    in_a_file(text, check)
