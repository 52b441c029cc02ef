import tomllib

import pytest

from edge import config
from edge.cli import main


def test_empty_file_is_valid_and_gives_defaults(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("")
    cfg = config.load(p)
    assert cfg.camera.source == "demo" and cfg.policy.min_face_width_frac == 0.10
    assert cfg.policy.unmasked_frames == 5 and cfg.mqtt.prefix == "maskdoor"


def test_printed_default_parses_back_to_the_defaults(capsys):
    assert main(["config", "--print-default"]) == 0
    text = capsys.readouterr().out
    data = tomllib.loads(text)
    assert config.build(data) == config.load(None)
    for section in config.SCHEMA.values():
        for f in section.fields.values():
            assert f"# {f.help}" in text


@pytest.mark.parametrize("toml, message", [
    ("[camera]\nsorce = 'usb:0'\n", "[camera] unknown key 'sorce'; did you mean 'source'?"),
    ("[gpio]\nred_led = '17'\n", "gpio.red_led = '17': expected a whole number"),
    ("[policy]\nmin_face_width_frac = 2.0\n", "policy.min_face_width_frac = 2.0: must be between"),
    ("[cam]\n", "unknown section '[cam]'; did you mean '[camera]'?"),
    ("[service]\nlog_level = 'LOUD'\n", "service.log_level = 'LOUD': must be one of"),
    ("[mqtt\n", "not valid TOML"),
    ("[classifier]\nmodel = 'pari'\n", "classifier.model = 'pari': neither a shipped model "
     "(pair, single) nor the path of a .tflite or .json; did you mean 'pair'?"),
    ("[detector]\nmodel = 'dor'\n", "did you mean 'door'?"),
])
def test_bad_config_names_the_key(tmp_path, toml, message):
    p = tmp_path / "c.toml"
    p.write_text(toml)
    with pytest.raises(config.ConfigError) as err:
        config.load(p)
    assert message in str(err.value)
    assert str(p) in str(err.value)


def test_run_with_a_bad_key_fails_at_start_up_naming_it(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text("[policy]\nunmasked_frame = 3\n")
    assert main(["run", "--config", str(p), "--max-frames", "1"]) == 2
    err = capsys.readouterr().err
    assert "[policy] unknown key 'unmasked_frame'; did you mean 'unmasked_frames'?" in err


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(config.ConfigError, match="maskdoor config --print-default"):
        config.load(tmp_path / "nope.toml")


def test_overrides_are_validated_too():
    cfg = config.load(None, {"camera.source": "usb:1", "mqtt.url": "mqtt://h:1"})
    assert cfg.camera.source == "usb:1" and cfg.mqtt.url == "mqtt://h:1"
    with pytest.raises(config.ConfigError, match="camera.width"):
        config.load(None, {"camera.width": "wide"})


def test_state_dir_rule(monkeypatch, tmp_path):
    cfg = config.load(None)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "sd"))
    assert config.state_dir(cfg) == tmp_path / "sd"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert config.state_dir(cfg) == tmp_path / "xdg" / "maskdoor"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config.state_dir(cfg) == tmp_path / "home" / ".local" / "state" / "maskdoor"


def test_model_keys_take_shipped_names_or_model_paths():
    for model in ("pair", "single", "", "/opt/models/mine.tflite", "my_pair.json"):
        assert config.load(None, {"classifier.model": model}).classifier.model == model
    for model in ("door", "full", "accurate", "det.tflite"):
        assert config.load(None, {"detector.model": model}).detector.model == model


# --- every bad value is refused, all at once, the same way by `config --check` and `run` ----------

FLOAT_KEYS = [f"{s}.{k}" for s, section in config.SCHEMA.items()
              for k, f in section.fields.items() if f.kind is float]


def write(tmp_path, text: str | bytes, name: str = "c.toml"):
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("literal", ["nan", "inf", "-inf"])
def test_every_float_key_refuses_nan_and_inf(tmp_path, key, literal):
    section, name = key.split(".")
    p = write(tmp_path, f"[{section}]\n{name} = {literal}\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(p)
    assert f"{p}: {key} = {literal}: must be a finite number" in str(err.value)


def config_check_and_run(path, capsys, *flags):
    """What `maskdoor config --check` and `maskdoor run` print for ``path``: (code, message)
    of each, the message without the command's name."""
    said = []
    for argv in (["config", "--check", str(path), *flags],
                 ["run", "--config", str(path), "--max-frames", "1", *flags]):
        code = main(argv)
        err = capsys.readouterr().err
        prefix = f"maskdoor {argv[0]}: "
        assert err.startswith(prefix), err
        said.append((code, err[len(prefix):]))
    return said


# (file content, what the one message must say); each was accepted or crashed start-up before
BAD_FILES = [
    ("[policy]\nmin_face_width_frac = nan\n", "policy.min_face_width_frac = nan: must be a finite"),
    ("[detector]\nthreshold = nan\n", "detector.threshold = nan: must be a finite number"),
    ("[mqtt]\nurl = 'mqtt://127.0.0.1:99999'\n", "mqtt.url = 'mqtt://127.0.0.1:99999': "),
    ("[mqtt]\nurl = 'mqtt://127.0.0.1:abc'\n", "mqtt.url = 'mqtt://127.0.0.1:abc': "),
    ("[mqtt]\nurl = 'mqtt://[::1'\n", "mqtt.url = 'mqtt://[::1': "),
    ("[mqtt]\nurl = 'mqtt://my broker:1883'\n", "mqtt.url = 'mqtt://my broker:1883': contains "
     "spaces"),
    ("[mqtt]\nurl = 'http://x'\n", "mqtt.url = 'http://x': "),
    ("[mqtt]\nurl = 'mqtts://h'\nusername = 'u'\npassword_file = '/no/such/pw'\n",
     "mqtt.password_file = '/no/such/pw': no such file"),
    ("[mqtt]\nurl = 'mqtts://h'\nca_certs = '/no/such/ca.pem'\n",
     "mqtt.ca_certs = '/no/such/ca.pem': no such file"),
    ("[service]\nstate_dir = '/proc/maskdoor'\n", "service.state_dir = '/proc/maskdoor': is "
     "under /proc"),
    ("[service]\nstate_dir = '/sys/x'\n", "service.state_dir = '/sys/x': is under /sys"),
    ("[camera]\nsource = 'usb:abc'\n", "camera.source = 'usb:abc': write usb:N"),
    ("[camera]\nsource = 'ftp://cam/x'\n", "camera.source = 'ftp://cam/x': 'ftp://' streams"),
    ("[gpio]\nred_led = 17\nbuzzer = 17\n", "gpio.buzzer = 17: pin 17 is already "
     "gpio.red_led's; give each part its own pin, or -1"),
    ("[gpio]\ngreen_led = 27\n", "gpio.green_led = 27: pin 27 is already gpio.buzzer's"),
    ("[mqtt]\ndevice_id = 'front/door'\n", "mqtt.device_id = 'front/door': use 1 to 64 letters"),
    ("[mqtt]\ndevice_id = 'front door'\n", "mqtt.device_id = 'front door': use 1 to 64"),
    ("[mqtt]\ndevice_id = 'door+'\n", "mqtt.device_id = 'door+': use 1 to 64"),
    ("[mqtt]\ndevice_id = \"door\\u0000\"\n", "mqtt.device_id = 'door\\x00': contains a NUL"),
    ("[mqtt]\nprefix = 'home/#'\n", "mqtt.prefix = 'home/#': contains '#'"),
    ("[mqtt]\nprefix = 'home//door'\n", "mqtt.prefix = 'home//door': has an empty level"),
    ("[mqtt]\ndiscovery_prefix = 'home assistant'\n", "mqtt.discovery_prefix = 'home "
     "assistant': contains ' '"),
    ("[mqtt]\nprefix = '$SYS'\n", "topics starting with '$' are the broker's own"),
    ("[camera]\nsource = ''\n", "camera.source = '': is empty"),
    ("[service]\nlog_level = 'info'\n", "write it in capitals: 'INFO'"),
    (b"[camera]\nsource = '\xff'\n", "not UTF-8 text (byte 0xff on line 2); save the file as "
     "UTF-8"),
    ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("[camera]\nwidth = 1" + "0" * 5000 + "\n", "not valid TOML"),
    ("camera = 3\n", "camera = 3: 'camera' is a section; write [camera]"),
]


@pytest.mark.parametrize("text, message", BAD_FILES)
def test_config_check_and_run_refuse_alike(tmp_path, capsys, text, message):
    p = write(tmp_path, text)
    (check_code, check_says), (run_code, run_says) = config_check_and_run(p, capsys)
    assert check_code == run_code == 2
    assert check_says == run_says
    assert message in check_says and str(p) in check_says


def test_every_problem_is_listed_at_once(tmp_path):
    p = write(tmp_path, "[camera]\nfps = nan\nsource = 'usb:x'\nwidht = 3\n"
                        "[gpio]\nbuzzer = 17\n[mqtt]\nurl = 'mqtt://h:99999'\npassword = 5\n"
                        "[policy]\nunmasked_frames = 0\n[cam]\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(p)
    problems = err.value.problems
    named = ["unknown section '[cam]'", "unknown key 'widht'", "camera.source = 'usb:x'",
             "camera.fps = nan", "policy.unmasked_frames = 0", "mqtt.url = 'mqtt://h:99999'",
             "mqtt.password:", "gpio.buzzer = 17"]
    assert len(problems) == len(named), problems
    for what in named:
        (line,) = [p_ for p_ in problems if what in p_]
        assert line.startswith(f"{p}: ")
    assert str(err.value).startswith(f"{len(named)} problems in the configuration; fix each:\n")


def test_a_bad_password_is_never_shown(tmp_path):
    for text in ("[mqtt]\npassword = 271828\n", "[mqtt]\npassword = \"wx\\u0000271828\"\n",
                 "[mqtt]\npassword = ['271828']\n"):
        with pytest.raises(config.ConfigError) as err:
            config.load(write(tmp_path, text))
        assert "271828" not in str(err.value)
        assert "mqtt.password:" in str(err.value)


def test_command_line_overrides_go_through_the_same_checks(tmp_path, capsys):
    p = write(tmp_path, "[camera]\nfps = inf\n")
    flags = ["--mqtt", "mqtt://127.0.0.1:99999", "--source", "usb:x", "--device-id", "a/b"]
    (check_code, check_says), (run_code, run_says) = config_check_and_run(p, capsys, *flags)
    assert check_code == run_code == 2 and check_says == run_says
    assert "4 problems" in check_says
    assert "--mqtt: mqtt.url = 'mqtt://127.0.0.1:99999'" in check_says
    assert "--source: camera.source = 'usb:x'" in check_says
    assert "--device-id: mqtt.device_id = 'a/b'" in check_says
    assert f"{p}: camera.fps = inf" in check_says
    assert main(["check", "--config", str(p), "--mqtt", "http://x"]) == 2
    assert "--mqtt: mqtt.url = 'http://x'" in capsys.readouterr().err


def test_a_good_file_is_valid_for_both(tmp_path, capsys):
    pw = write(tmp_path, "s3cret\n", "pw")
    p = write(tmp_path, f"[mqtt]\nurl = 'mqtt://127.0.0.1:1883'\nusername = 'door'\n"
                        f"password_file = '{pw}'\ndevice_id = 'front-door_2'\n"
                        f"prefix = 'home/maskdoor'\n[gpio]\nred_led = -1\nbuzzer = 17\n"
                        f"[service]\nstate_dir = '{tmp_path / 'state' / 'deeper'}'\n")
    assert main(["config", "--check", str(p)]) == 0
    assert capsys.readouterr().out == f"{p}: valid\n"
    cfg = config.load(p)
    assert (cfg.gpio.red_led, cfg.gpio.buzzer, cfg.mqtt.device_id) == (-1, 17, "front-door_2")


def test_a_part_that_is_not_fitted_is_minus_one(mock_pins):
    from edge.sinks.pins import DoorSignals
    cfg = config.load(None, {"gpio.red_led": -1, "gpio.green_led": 22, "gpio.beeps": 1,
                             "gpio.beep_on_s": 0.05})
    sig = DoorSignals(cfg.gpio)
    assert sig.available and sig.red is None and sig.buzzer is not None
    sig.alert()
    sig.masked_nearby(True)
    assert mock_pins.pin(22).state
    assert not mock_pins.pin(17).state
    sig.close()


@pytest.mark.parametrize("hostname, device_id", [
    ("front-door.example.org", "front-door"), ("front door", "front_door"),
    ("a+b#c", "a_b_c"), ("", "maskdoor"), ("x" * 100, "x" * 64)])
def test_the_hostname_default_is_made_a_valid_id(monkeypatch, hostname, device_id):
    monkeypatch.setattr(config.socket, "gethostname", lambda: hostname)
    assert config.load(None).mqtt.device_id == device_id


def test_files_that_must_be_readable(tmp_path):
    ssl = pytest.importorskip("ssl")
    (tmp_path / "folder").mkdir()
    bad = {"password_file": [("folder", "is a folder"), ("/proc/self/status", "is under /proc"),
                             (write(tmp_path, b"\xff\xfe", "latin"), "is not UTF-8"),
                             (write(tmp_path, "\n", "blank"), "is empty")],
           "ca_certs": [("folder", "is a folder"),
                        (write(tmp_path, "not a certificate", "ca"), "holds no usable CA")]}
    for key, cases in bad.items():
        for value, reason in cases:
            value = str(tmp_path / value) if value == "folder" else str(value)
            with pytest.raises(config.ConfigError) as err:
                config.load(None, {f"mqtt.{key}": value, "mqtt.username": "u",
                                   "mqtt.url": "mqtts://h"})
            assert f"mqtt.{key} = {value!r}: {reason}" in str(err.value)
    bundle = ssl.get_default_verify_paths().cafile
    if bundle:
        cfg = config.load(None, {"mqtt.ca_certs": bundle, "mqtt.url": "mqtts://h"})
        assert cfg.mqtt.ca_certs == bundle
        with pytest.raises(config.ConfigError, match="only used with TLS"):
            config.load(None, {"mqtt.ca_certs": bundle, "mqtt.url": "mqtt://h"})


def test_password_needs_a_user_and_only_one_source(tmp_path):
    pw = write(tmp_path, "x", "pw")
    with pytest.raises(config.ConfigError, match="mqtt.password: a password is only sent with a "
                       "user name; set mqtt.username"):
        config.load(None, {"mqtt.password": "x"})
    with pytest.raises(config.ConfigError, match="mqtt.password is set too; keep one"):
        config.load(None, {"mqtt.password": "x", "mqtt.password_file": str(pw),
                           "mqtt.username": "u"})


def test_state_dir_must_be_a_folder_somewhere_usable(tmp_path):
    blocker = write(tmp_path, "", "file")
    for value, reason in ((str(blocker / "state"), f"{blocker} is a file, not a folder"),
                          ("state", "write an absolute path")):
        with pytest.raises(config.ConfigError) as err:
            config.load(None, {"service.state_dir": value})
        assert f"service.state_dir = {value!r}: {reason}" in str(err.value)
    link = tmp_path / "proc"
    link.symlink_to("/proc/self")
    with pytest.raises(config.ConfigError, match="is under /proc"):
        config.load(None, {"service.state_dir": str(link / "x")})


def test_a_byte_order_mark_is_fine(tmp_path):
    assert config.load(write(tmp_path, b"\xef\xbb\xbf[camera]\nfps = 10\n")).camera.fps == 10.0


def test_config_check_in_a_real_process_prints_no_traceback(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    exe = str(Path(sys.executable).parent / "maskdoor")
    p = write(tmp_path, b"[mqtt]\nurl = 'mqtt://127.0.0.1:99999'\n[gpio]\nred_led = 27\n")
    for argv in (["config", "--check", str(p)], ["run", "--config", str(p)],
                 ["check", "--config", str(p)]):
        r = subprocess.run([exe, *argv], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.startswith(f"maskdoor {argv[0]}: 2 problems in the configuration")
