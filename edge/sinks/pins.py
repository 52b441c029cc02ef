"""The door's lights and sound through gpiozero: a red LED and a buzzer on each alert, and an
optional green LED while the nearest person wears a mask.

Wiring (BCM numbering): each part between its pin and ground through its resistor, or, for
parts that switch on when the pin is low, set ``gpio.active_high = false``. gpiozero picks its
pin factory at run time (``GPIOZERO_PIN_FACTORY``; ``mock`` gives tests real mock pins). With no
GPIO at all (a laptop) the appliance runs on and says once that the pins are off.
"""

from __future__ import annotations

import logging
import warnings

from edge.sinks import Sink
from edge.types import Verdict

log = logging.getLogger(__name__)


class DoorSignals(Sink):
    """``alert()`` lights the red LED for ``alert_s`` and beeps; ``masked_nearby(bool)`` drives
    the green LED; ``close()`` switches everything off."""

    def __init__(self, gpio_cfg):
        self.cfg = gpio_cfg
        self.red = self.buzzer = self.green = None
        self.available = False
        self.reason = "disabled in the config (gpio.enabled = false)"
        if not gpio_cfg.enabled:
            return
        try:
            with warnings.catch_warnings():
                # gpiozero warns for every pin library it tries; one message below says it all
                warnings.simplefilter("ignore")
                self._open_devices(gpio_cfg)
            self.available = True
            self.reason = ""
        except Exception as exc:  # ImportError, BadPinFactory, pin in use: all mean "no pins"
            self.close()
            self.reason = f"{type(exc).__name__}: {exc}"
            log.warning("GPIO pins are off (%s); the door runs without LED and buzzer. On a Pi, "
                        "check the pins in [gpio] and that the user is in the 'gpio' group.",
                        self.reason)

    def _open_devices(self, gpio_cfg) -> None:
        from gpiozero import LED, Buzzer
        if gpio_cfg.red_led >= 0:
            self.red = LED(gpio_cfg.red_led, active_high=gpio_cfg.active_high,
                           initial_value=False)
        if gpio_cfg.buzzer >= 0:
            self.buzzer = Buzzer(gpio_cfg.buzzer, active_high=gpio_cfg.active_high,
                                 initial_value=False)
        if gpio_cfg.green_led >= 0:
            self.green = LED(gpio_cfg.green_led, active_high=gpio_cfg.active_high,
                             initial_value=False)

    def alert(self) -> None:
        if self.red is not None:
            self.red.blink(on_time=self.cfg.alert_s, off_time=0.01, n=1, background=True)
        if self.buzzer is not None and self.cfg.beeps > 0:
            self.buzzer.beep(on_time=self.cfg.beep_on_s, off_time=self.cfg.beep_off_s,
                             n=self.cfg.beeps, background=True)

    def masked_nearby(self, masked: bool) -> None:
        if self.green is not None and bool(self.green.value) != masked:
            self.green.value = masked

    def close(self) -> None:
        for dev in (self.red, self.buzzer, self.green):
            if dev is not None:
                try:
                    dev.off()
                    dev.close()
                except Exception as exc:  # closing must never stop shutdown
                    log.debug("closing %s: %s", dev, exc)
        self.red = self.buzzer = self.green = None

    # --- the sink interface of the door loop ---------------------------------------------------
    def on_event(self, event, jpeg: bytes | None = None) -> None:
        self.alert()

    def on_frame(self, frame, faces) -> None:
        nearest = max(faces, key=lambda f: f.width_frac, default=None)
        self.masked_nearby(nearest is not None and nearest.verdict == Verdict.WITH_MASK)
