"""Build the bundled demo clip: a masked person, then an unmasked one, walking up to a door.

Made from two CC0 photos of ``shared/data/detect/andrewmvd`` (committed as test fixtures) over a
drawn corridor, so the appliance can run end to end on a machine with no camera.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "andrewmvd" / "images"
PEOPLE = (("maksssksksss322.jpg", (62, 69, 188, 241)),   # with_mask, face box from its annotation
          ("maksssksksss128.jpg", (93, 141, 194, 302)))  # without_mask
SIZE = (640, 480)
FPS = 15


def corridor(rng) -> np.ndarray:
    w, h = SIZE
    y = np.linspace(0, 1, h)[:, None, None]
    bg = (np.array([150, 160, 165]) * (1 - 0.3 * y) + rng.normal(0, 3, (h, w, 3))).clip(0, 255)
    bg = bg.astype(np.uint8)
    cv2.rectangle(bg, (200, 40), (440, 480), (70, 90, 120), -1)      # door
    cv2.rectangle(bg, (200, 40), (440, 480), (40, 50, 60), 6)        # frame
    cv2.circle(bg, (415, 270), 8, (30, 160, 200), -1)                # handle
    return cv2.GaussianBlur(bg, (3, 3), 0)


def paste_person(bg, photo, face_box, face_frac: float) -> np.ndarray:
    """The photo scaled so its face is ``face_frac`` of the frame wide, face centred at 40%."""
    w, h = SIZE
    fx1, fy1, fx2, fy2 = face_box
    s = face_frac * w / (fx2 - fx1)
    img = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    cx, cy = (fx1 + fx2) / 2 * s, (fy1 + fy2) / 2 * s
    ox, oy = int(round(w / 2 - cx)), int(round(0.4 * h - cy))
    out = bg.copy()
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + img.shape[1], w), min(oy + img.shape[0], h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = img[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return out


def frames():
    rng = np.random.default_rng(7)
    bg = corridor(rng)
    yield from (bg for _ in range(8))
    for name, box in PEOPLE:
        photo = cv2.imread(str(FIXTURES / name))
        if photo is None:
            raise FileNotFoundError(FIXTURES / name)
        for f in np.linspace(0.05, 0.30, 45):           # walking up: 3 s
            yield paste_person(bg, photo, box, float(f))
        for _ in range(15):                             # at the door: 1 s
            yield paste_person(bg, photo, box, 0.30)
        yield from (bg for _ in range(15))              # gone: 1 s


def write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    if not vw.isOpened():
        raise OSError(f"OpenCV cannot write {path} (no mp4v encoder?)")
    n = 0
    for frame in frames():
        vw.write(frame)
        n += 1
    vw.release()
    return path


if __name__ == "__main__":
    from edge.camera.sources import DEMO_CLIP
    p = write(DEMO_CLIP)
    print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB)")
