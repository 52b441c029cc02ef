"""LED and buzzer through gpiozero's mock pin factory: states and timings."""

import time
from types import SimpleNamespace

import pytest

from conftest import on_periods
from edge import config
from edge.sinks.pins import DoorSignals


def gpio_cfg(**kw):
    cfg = config.load(None).gpio
    return SimpleNamespace(**{**vars(cfg), **kw})


def test_alert_lights_red_and_beeps(mock_pins):
    sig = DoorSignals(gpio_cfg(alert_s=0.4, beeps=3, beep_on_s=0.05, beep_off_s=0.05))
    assert sig.available
    red, buzzer = mock_pins.pin(17), mock_pins.pin(27)
    sig.alert()
    time.sleep(0.1)
    assert red.state and buzzer.state in (0, 1)
    time.sleep(0.6)
    assert not red.state and not buzzer.state
    (red_on,) = [p for p in on_periods(red) if p[1] > 0.01]
    assert red_on[1] == pytest.approx(0.4, abs=0.15)
    beeps = on_periods(buzzer)
    assert len(beeps) == 3
    assert all(b[1] == pytest.approx(0.05, abs=0.04) for b in beeps)
    sig.close()


def test_active_low_parts(mock_pins):
    sig = DoorSignals(gpio_cfg(active_high=False, alert_s=0.3, beeps=0))
    red = mock_pins.pin(17)
    assert red.state  # idle = high for an active-low LED
    sig.alert()
    time.sleep(0.1)
    assert not red.state
    sig.close()


def test_green_led_follows_the_nearest_face(mock_pins):
    from edge.types import Box, Face, TrackedFace
    sig = DoorSignals(gpio_cfg(green_led=22))
    green = mock_pins.pin(22)

    def tracked(verdict, frac):
        return TrackedFace(1, Face(Box(0, 0, 10, 10), 0.9), verdict, 0.9, frac, 0)

    sig.on_frame(None, [tracked("without_mask", 0.05), tracked("with_mask", 0.2)])
    assert green.state
    sig.on_frame(None, [tracked("without_mask", 0.3), tracked("with_mask", 0.2)])
    assert not green.state
    sig.on_frame(None, [])
    assert not green.state
    sig.close()


def test_no_gpio_runs_on_and_says_so_once(monkeypatch, caplog):
    from gpiozero import Device
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no_such_factory")
    sig = DoorSignals(gpio_cfg())
    assert not sig.available
    sig.alert()
    sig.masked_nearby(True)
    sig.close()
    warnings = [r for r in caplog.records if "GPIO pins are off" in r.getMessage()]
    assert len(warnings) == 1
