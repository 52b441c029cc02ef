"""Reading input images from paths and folders, and drawing results on them."""

from __future__ import annotations

from pathlib import Path
import cv2
import numpy as np

from edge.errors import ImageError
from edge.types import Face

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

# BGR colours by verdict; faces without a verdict yet are drawn in amber.
COLOURS = {None: (0, 191, 255), "with_mask": (0, 200, 0), "without_mask": (0, 0, 255),
           "incorrect_mask": (0, 140, 255)}


def image_files(path: Path) -> list[Path]:
    """``path`` itself, or the image files (by extension, sorted) inside the folder ``path``,
    recursively; ImageError for a folder that holds none."""
    if not path.is_dir():
        return [path]
    found = sorted(f for f in path.rglob("*")
                   if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
    if not found:
        raise ImageError(f"no images found in {path} (looked for "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))}, in subfolders too)")
    return found


def read_image(path: Path) -> np.ndarray:
    """Decode ``path`` to BGR uint8, or raise ImageError naming it and the reason."""
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a regular file")
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from exc
    if not data.size:
        raise ImageError(f"{path}: empty file (0 bytes); skipped")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        if "MAX_IMAGE_PIXELS" in str(exc):
            raise ImageError(f"{path}: declares more pixels than can be decoded (over 2^30); "
                             "skipped") from None
        raise ImageError(f"{path}: cannot be decoded ({getattr(exc, 'err', None) or exc}); "
                         "skipped") from None
    except MemoryError:
        raise ImageError(f"{path}: too large to decode in the memory free; skipped") from None
    if image is None:
        raise ImageError(f"{path}: not a readable image (JPEG, PNG, BMP, WebP or TIFF expected); "
                         "skipped")
    return image


def save_image(path: Path, image: np.ndarray) -> Path:
    """Write ``image`` to ``path`` (as JPEG beside it if OpenCV has no writer for its suffix);
    the path written, or ImageError naming it and the reason."""
    for target in (path, path.with_suffix(".jpg")):
        try:
            if cv2.imwrite(str(target), image):
                return target
        except cv2.error:  # no writer for this suffix
            continue
    raise ImageError(f"{path}: cannot be written (is the folder writable, and the disk not "
                     "full?)")


def annotate(image: np.ndarray, faces: list[Face]) -> np.ndarray:
    """A copy of ``image`` with each face boxed in its verdict's colour, labelled with scores."""
    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 400))
    for f in faces:
        colour = COLOURS.get(f.label, COLOURS[None])
        x1, y1, x2, y2 = (int(round(v)) for v in (f.box.x1, f.box.y1, f.box.x2, f.box.y2))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        text = (f"{f.label} {f.label_score:.2f}" if f.label else "face") + f" ({f.score:.2f})"
        scale = 0.4 * thick
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 4 if y1 - th - 6 >= 0 else y2 + th + 4
        cv2.rectangle(out, (x1, ty - th - 3), (x1 + tw + 4, ty + base - 1), colour, -1)
        cv2.putText(out, text, (x1 + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    1, cv2.LINE_AA)
    return out
