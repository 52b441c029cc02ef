"""`maskdoor check --signals` on gpiozero's mock pins: each part announced, then driven once."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import on_periods
from edge import config
from edge.sinks.signals_check import SHOW_S, check_signals

EXE = str(Path(sys.executable).parent / "maskdoor")


def test_each_part_is_announced_while_still_off_then_driven_once_in_turn(mock_pins):
    gpio = config.load(None, {"gpio.green_led": 22, "gpio.beeps": 2, "gpio.beep_on_s": 0.1,
                              "gpio.beep_off_s": 0.1}).gpio
    said = []

    def say(text):
        said.append((text, tuple(mock_pins.pin(n).state for n in (17, 27, 22))))

    assert check_signals(gpio, say) == 0
    assert said[0] == ("red LED on pin 17 for 2 s: look at it now", (False, False, False))
    assert said[1][0].startswith("buzzer on pin 27: 2 beep(s) of 0.1 s") and \
        said[1][1] == (False, False, False)
    assert said[2] == ("green LED on pin 22 for 2 s: look at it now", (False, False, False))
    assert said[3][0].startswith("PASS  signals")
    red, buzzer, green = (on_periods(mock_pins.pin(n)) for n in (17, 27, 22))
    assert len(red) == 1 and SHOW_S - 0.05 < red[0][1] < SHOW_S + 0.5, red
    assert len(buzzer) == 2 and all(0.05 < length < 0.3 for _, length in buzzer), buzzer
    assert len(green) == 1 and SHOW_S - 0.05 < green[0][1] < SHOW_S + 0.5, green
    red_end = red[0][0] + red[0][1]
    assert red_end <= buzzer[0][0] + 0.05 and buzzer[-1][0] + buzzer[-1][1] <= green[0][0] + 0.05, \
        "one part at a time: red, then the buzzer, then green"
    assert not any(mock_pins.pin(n).state for n in (17, 27, 22)), "all off at the end"


def test_a_red_led_not_fitted_is_skipped_and_the_rest_still_driven(mock_pins):
    gpio = config.load(None, {"gpio.red_led": -1, "gpio.beeps": 1, "gpio.beep_on_s": 0.05,
                              "gpio.beep_off_s": 0.05}).gpio
    said = []
    assert check_signals(gpio, said.append, sleep=lambda s: None) == 0
    assert said[0] == "SKIP  red LED: none (gpio.red_led = -1)"
    assert said[1].startswith("buzzer on pin 27") and len(on_periods(mock_pins.pin(27))) == 1


def test_cli_signals_check_and_its_failures():
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    ok = subprocess.run([EXE, "check", "--signals"], capture_output=True, text=True, env=env,
                        timeout=60)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0] == "red LED on pin 17 for 2 s: look at it now"
    assert lines[1].startswith("buzzer on pin 27: 3 beep(s)")
    assert lines[2] == "SKIP  green LED: none (gpio.green_led = -1)"
    assert lines[3].startswith("PASS  signals")


def test_signals_check_says_what_to_fix(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[gpio]\nenabled = false\n")
    off = subprocess.run([EXE, "check", "--signals", "--config", str(conf)], capture_output=True,
                         text=True, timeout=60)
    assert off.returncode == 1 and "gpio.enabled = false; set it to true" in off.stdout
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "nosuchfactory"}
    none = subprocess.run([EXE, "check", "--signals"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert none.returncode == 1 and none.stdout.startswith("FAIL  signals:")
    assert "Traceback" not in none.stderr


def test_check_names_only_the_parts_fitted(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[gpio]\nred_led = -1\ngreen_led = 22\n")
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    run = subprocess.run([EXE, "check", "--config", str(conf)], capture_output=True, text=True,
                         env=env, timeout=120)
    pins = [line for line in (run.stdout + run.stderr).splitlines() if "pins" in line]
    assert pins == ["PASS  pins: buzzer 27, green LED 22 (BCM); no red LED"], run.stdout + run.stderr
