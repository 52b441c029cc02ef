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
