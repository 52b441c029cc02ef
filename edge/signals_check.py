"""``maskdoor check --signals``: light each LED and sound the buzzer once, saying which first,
so whoever wires the door can see and hear that each part is on the pin the config names."""

from __future__ import annotations

import time

SHOW_S = 2.0  # how long each LED stays lit


def check_signals(gpio_cfg, say=None, sleep=time.sleep) -> int:
    """Red LED for SHOW_S, the alert's buzzer pattern, green LED for SHOW_S; each announced
    through ``say`` (default: print) before it starts. 0 if the pins could be driven, else 1."""
    from edge.pins import DoorSignals
    say = say or (lambda text: print(text, flush=True))
    if not gpio_cfg.enabled:
        say("FAIL  signals: gpio.enabled = false; set it to true in [gpio] to drive the pins")
        return 1
    signals = DoorSignals(gpio_cfg)
    try:
        if not signals.available:
            say(f"FAIL  signals: {signals.reason}")
            return 1
        say(f"red LED on pin {gpio_cfg.red_led} for {SHOW_S:g} s: look at it now")
        signals.red.on()
        sleep(SHOW_S)
        signals.red.off()
        if signals.buzzer is not None and gpio_cfg.beeps > 0:
            say(f"buzzer on pin {gpio_cfg.buzzer}: {gpio_cfg.beeps} beep(s) of "
                f"{gpio_cfg.beep_on_s:g} s, as on an alert: listen now")
            signals.buzzer.beep(on_time=gpio_cfg.beep_on_s, off_time=gpio_cfg.beep_off_s,
                                n=gpio_cfg.beeps, background=False)
        else:
            say("SKIP  buzzer: none (gpio.buzzer = -1 or gpio.beeps = 0)")
        if signals.green is not None:
            say(f"green LED on pin {gpio_cfg.green_led} for {SHOW_S:g} s: look at it now")
            signals.green.on()
            sleep(SHOW_S)
            signals.green.off()
        else:
            say("SKIP  green LED: none (gpio.green_led = -1)")
        say("PASS  signals: each part was driven once; if one stayed dark or silent, check its "
            "wiring and its pin in [gpio] (BCM numbers; gpio.active_high for parts lit by a low "
            "pin)")
        return 0
    finally:
        signals.close()
