"""``maskdoor check --signals``: light each LED and sound the buzzer once, saying which first,
so whoever wires the door can see and hear that each part is on the pin the config names."""

from __future__ import annotations

import time

SHOW_S = 2.0  # how long each LED stays lit


def check_signals(gpio_cfg, say=None, sleep=time.sleep) -> int:
    """Red LED for SHOW_S, the alert's buzzer pattern, green LED for SHOW_S; each announced
    through ``say`` (default: print) before it starts. 0 if the pins could be driven, else 1."""
    from edge.sinks.pins import DoorSignals
    say = say or (lambda text: print(text, flush=True))

    def show(led, name: str, key: str, pin: int) -> None:
        """Light ``led`` for SHOW_S, announced first; a part not fitted is skipped."""
        if led is None:
            say(f"SKIP  {name}: none (gpio.{key} = -1)")
            return
        say(f"{name} on pin {pin} for {SHOW_S:g} s: look at it now")
        led.on()
        sleep(SHOW_S)
        led.off()

    if not gpio_cfg.enabled:
        say("FAIL  signals: gpio.enabled = false; set it to true in [gpio] to drive the pins")
        return 1
    signals = DoorSignals(gpio_cfg)
    try:
        if not signals.available:
            say(f"FAIL  signals: {signals.reason}")
            return 1
        show(signals.red, "red LED", "red_led", gpio_cfg.red_led)
        if signals.buzzer is not None and gpio_cfg.beeps > 0:
            say(f"buzzer on pin {gpio_cfg.buzzer}: {gpio_cfg.beeps} beep(s) of "
                f"{gpio_cfg.beep_on_s:g} s, as on an alert: listen now")
            signals.buzzer.beep(on_time=gpio_cfg.beep_on_s, off_time=gpio_cfg.beep_off_s,
                                n=gpio_cfg.beeps, background=False)
        else:
            say("SKIP  buzzer: none (gpio.buzzer = -1 or gpio.beeps = 0)")
        show(signals.green, "green LED", "green_led", gpio_cfg.green_led)
        say("PASS  signals: each part was driven once; if one stayed dark or silent, check its "
            "wiring and its pin in [gpio] (BCM numbers; gpio.active_high for parts lit by a low "
            "pin)")
        return 0
    finally:
        signals.close()
