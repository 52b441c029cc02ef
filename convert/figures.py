"""Draw the README's pictures: ``python -m convert.figures [--out docs]``.

- ``door.png``: three frames of the bundled demo clip as the appliance sees them, through the
  shipped ``door`` detector, the ``single`` classifier, the tracker and the door policy with its
  default settings, each annotated by :func:`edge.images.annotate` with the face's width as a
  share of the frame and the proximity state the policy gives it.
- ``wiring.png``: the red LED, the buzzer (through an NPN transistor) and the optional green LED
  on the Raspberry Pi's 40-pin header, at the default BCM pins.

Only OpenCV and numpy are needed (both come with maskdoor itself).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (110, 110, 110)
RED, GREEN, BLUE, ORANGE = (40, 40, 220), (40, 160, 40), (180, 90, 20), (0, 140, 255)


# --- door.png -------------------------------------------------------------------------------

def door_frames():
    """(frame, tracked faces, events) for every frame of the demo clip, through the appliance's
    default models and policy."""
    from edge.door import process_frames
    from edge.sinks import SafeSinks
    from edge.inference.classifier import load_classifier
    from edge.inference.detectors import load_detector
    from edge.tracking.policy import DoorPolicy
    from edge.camera.sources import DEMO_CLIP, OpenCVSource
    from edge.camera.readers import SyncReader
    from edge.tracking.tracker import IoUTracker
    from models import detector_path

    seen = []
    reader = SyncReader(OpenCVSource(str(DEMO_CLIP), live=False, name="demo")).start()
    try:
        process_frames(reader, load_detector(detector_path("door")), load_classifier("single"),
                       IoUTracker(), DoorPolicy("demo"), SafeSinks([]),
                       on_frame=lambda frame, tracked, events: seen.append(
                           (frame, tracked, events)))
    finally:
        reader.stop()
    return seen


def proximity(t, policy) -> tuple[str, tuple[int, int, int]]:
    """The policy's view of one tracked face, in words, and a colour for it."""
    pct = f"face {100 * t.width_frac:.0f}% of frame width"
    if t.width_frac < policy.min_frac:
        return f"{pct}: too far (< {100 * policy.min_frac:.0f}%), no alert", GREY
    if t.verdict not in policy.alarm_labels:
        return f"{pct}: close, masked, no alert", GREEN
    return f"{pct}: close, unmasked {min(t.unmasked_streak, policy.k)}/{policy.k} frames", RED


def door_figure(out: Path) -> Path:
    from edge.images import annotate
    from edge.tracking.policy import DoorPolicy

    policy = DoorPolicy("demo")  # only its default settings are read
    seen = door_frames()

    def pick(want) -> int:
        return next(i for i, (_, tracked, _) in enumerate(seen) if tracked and want(tracked[0]))

    alert = next(i for i, (_, _, events) in enumerate(seen) if events)
    chosen = [
        (pick(lambda t: t.verdict == "with_mask" and t.width_frac >= 0.25), None),
        (pick(lambda t: t.verdict == "without_mask" and t.width_frac < policy.min_frac), None),
        (alert, "ALERT: red LED, buzzer, MQTT event"),
    ]
    panels = []
    for i, banner in chosen:
        frame, tracked, _ = seen[i]
        image = annotate(frame.image, [t.face for t in tracked])
        strip = np.full((70, image.shape[1], 3), 245, np.uint8)
        for row, t in enumerate(tracked[:1]):
            text, colour = proximity(t, policy)
            cv2.putText(strip, text, (10, 28 + 30 * row), FONT, 0.6, colour, 2, cv2.LINE_AA)
        cv2.putText(strip, banner or f"frame {frame.index} of the demo clip", (10, 58), FONT, 0.55,
                    RED if banner else GREY, 2 if banner else 1, cv2.LINE_AA)
        panels.append(np.vstack([image, strip]))
        panels.append(np.full((panels[-1].shape[0], 8, 3), 255, np.uint8))
    figure = np.hstack(panels[:-1])
    figure = cv2.resize(figure, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    path = out / "door.png"
    cv2.imwrite(str(path), figure, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path


# --- wiring.png -----------------------------------------------------------------------------

def text(img, s, xy, scale=0.55, colour=BLACK, thick=1):
    cv2.putText(img, s, xy, FONT, scale, colour, thick, cv2.LINE_AA)


def wire(img, points, colour=BLACK, thick=2):
    cv2.polylines(img, [np.array(points, np.int32)], False, colour, thick, cv2.LINE_AA)


def resistor(img, x1, x2, y, label):
    """A zig-zag resistor on a horizontal wire from x1 to x2, labelled above."""
    mid, half = (x1 + x2) // 2, 30
    wire(img, [(x1, y), (mid - half, y)])
    wire(img, [(mid + half, y), (x2, y)])
    wire(img, [(mid - half + 10 * k, y + (0 if k in (0, 6) else (-8 if k % 2 else 8)))
               for k in range(7)])
    text(img, label, (mid - half - 4, y - 16), 0.5)


def led(img, x, y, colour, label):
    """An LED on a horizontal wire, anode at x (left), cathode at x + 30 (right)."""
    tri = np.array([(x, y - 14), (x, y + 14), (x + 26, y)], np.int32)
    cv2.fillPoly(img, [tri], colour, cv2.LINE_AA)
    cv2.polylines(img, [tri], True, BLACK, 2, cv2.LINE_AA)
    cv2.line(img, (x + 26, y - 14), (x + 26, y + 14), BLACK, 3)
    for d in (0, 10):
        cv2.arrowedLine(img, (x + 6 + d, y - 18), (x + 16 + d, y - 32), colour, 2, cv2.LINE_AA,
                        tipLength=0.4)
    text(img, label, (x - 30, y + 36), 0.5)


def ground(img, x, y):
    """A ground symbol hanging from (x, y)."""
    wire(img, [(x, y), (x, y + 14)])
    for k, w in enumerate((16, 10, 4)):
        cv2.line(img, (x - w, y + 14 + 5 * k), (x + w, y + 14 + 5 * k), BLACK, 2)


def led_circuit(img, y, wire_colour, led_colour, label, note):
    """Pin terminal at (190, y) -> 330 ohm -> LED -> ground."""
    wire(img, [(190, y), (240, y)], wire_colour, 3)
    resistor(img, 240, 400, y, "330 ohm")
    wire(img, [(400, y), (440, y)])
    led(img, 440, y, led_colour, label)
    wire(img, [(466, y), (640, y), (640, y + 10)])
    ground(img, 640, y + 10)
    text(img, note, (330, y + 58), 0.45, GREY)


def header_inset(img, x0, y0, used):
    """Pins 1-20 of the 40-pin header as seen from above, pin 1 at the top; ``used``
    maps a physical pin to its colour."""
    step = 22
    cv2.rectangle(img, (x0 - 14, y0 - 14), (x0 + 36, y0 + 9 * step + 14), (60, 120, 60), -1)
    for n in range(1, 21):
        x, y = x0 + (0 if n % 2 else 22), y0 + (n - 1) // 2 * step
        colour = used.get(n, (200, 200, 200))
        if n == 1:  # the square pad
            cv2.rectangle(img, (x - 7, y - 7), (x + 7, y + 7), colour, -1)
        else:
            cv2.circle(img, (x, y), 7, colour, -1, cv2.LINE_AA)
        if n in used:
            tx = x0 - 40 if n % 2 else x0 + 46
            text(img, str(n), (tx, y + 5), 0.5, used[n], 2)
    text(img, "pin 1: the square pad, at", (x0 - 70, y0 + 9 * step + 40), 0.45, GREY)
    text(img, "the end away from the USB", (x0 - 70, y0 + 9 * step + 58), 0.45, GREY)


def wiring_figure(out: Path) -> Path:
    img = np.full((660, 1220, 3), 255, np.uint8)
    text(img, "maskdoor wiring: BCM GPIO numbers, physical header pins in [brackets]", (20, 34),
         0.7, BLACK, 2)
    five = (0, 0, 170)

    # the Pi as a block with the five terminals used
    cv2.rectangle(img, (30, 70), (190, 620), (60, 120, 60), 3)
    text(img, "Raspberry", (45, 250), 0.6, (60, 120, 60), 2)
    text(img, "Pi", (45, 275), 0.6, (60, 120, 60), 2)
    terminals = [("5V [2]", 100, five), ("GPIO17 [11]", 190, RED), ("GPIO27 [13]", 330, BLUE),
                 ("GPIO22 [15]", 490, GREEN), ("GND [9]", 580, BLACK)]
    for label, y, colour in terminals:
        cv2.circle(img, (190, y), 6, colour, -1)
        text(img, label, (70, y + 5), 0.5, colour, 2)

    led_circuit(img, 190, RED, (40, 40, 230), "red LED", "long leg (anode) towards the pin")

    # buzzer: GPIO27 -> 1 k -> NPN base; 5 V -> buzzer -> collector; emitter -> ground
    y = 330
    wire(img, [(190, y), (240, y)], BLUE, 3)
    resistor(img, 240, 400, y, "1 kohm")
    bx = 700
    wire(img, [(400, y), (bx, y)])
    cv2.line(img, (bx, y - 24), (bx, y + 24), BLACK, 4)
    cx = bx + 60
    wire(img, [(bx, y - 10), (cx, y - 40), (cx, 280)])                # collector
    wire(img, [(bx, y + 10), (cx, y + 40), (cx, y + 70)])             # emitter
    cv2.arrowedLine(img, (bx + 30, y + 25), (cx, y + 40), BLACK, 2, cv2.LINE_AA, tipLength=0.5)
    cv2.circle(img, (bx + 32, y), 46, BLACK, 1, cv2.LINE_AA)
    ground(img, cx, y + 70)
    for s, dx, dy in (("B", -24, -6), ("C", 8, -44), ("E", 8, 56)):
        text(img, s, (bx + dx if s == "B" else cx + dx, y + dy), 0.5, GREY)
    text(img, "NPN: 2N2222, BC337", (bx - 190, y + 70), 0.5)
    text(img, "or similar", (bx - 190, y + 90), 0.5)
    # 5 V down to the buzzer's + pin
    wire(img, [(190, 100), (cx, 100), (cx, 170)], five, 3)
    text(img, "+5 V", (cx + 8, 125), 0.5, five, 2)
    cv2.rectangle(img, (cx - 26, 170), (cx + 26, 280), (45, 45, 45), -1)
    text(img, "+", (cx - 40, 190), 0.6, BLACK, 2)
    text(img, "active buzzer", (cx - 150, 155), 0.5)
    # flyback diode across the buzzer, cathode (bar) to +5 V
    dx = cx + 90
    wire(img, [(cx, 150), (dx, 150), (dx, 208)])
    wire(img, [(cx, 290), (dx, 290), (dx, 236)])
    tri = np.array([(dx - 12, 236), (dx + 12, 236), (dx, 210)], np.int32)
    cv2.fillPoly(img, [tri], BLACK, cv2.LINE_AA)
    cv2.line(img, (dx - 12, 208), (dx + 12, 208), BLACK, 3)
    for p in ((cx, 150), (cx, 290)):
        cv2.circle(img, p, 5, BLACK, -1)
    text(img, "1N4148 / 1N4001:", (dx + 20, 214), 0.45)
    text(img, "for a magnetic buzzer;", (dx + 20, 232), 0.45)
    text(img, "a piezo one needs none", (dx + 20, 250), 0.45)

    led_circuit(img, 490, GREEN, (40, 200, 40), "green LED (optional)",
                "needs gpio.green_led = 22")

    # the Pi's ground
    wire(img, [(190, 580), (260, 580), (260, 590)])
    ground(img, 260, 590)
    text(img, "every ground symbol is joined to a GND pin: [6], [9], [14], [20] ...", (300, 615),
         0.5, BLACK)

    header_inset(img, 1070, 400, {2: five, 9: BLACK, 11: RED, 13: BLUE, 15: GREEN})
    text(img, "header, pins 1-20", (1010, 375), 0.5, BLACK, 1)
    path = out / "wiring.png"
    cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert.figures",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNG files")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (door_figure(args.out), wiring_figure(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
