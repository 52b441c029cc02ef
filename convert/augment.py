"""Augmentations for a door camera: scale and crop, zoom out, flips, light, gamma, blur, noise.

Every function takes and returns (image BGR uint8, boxes (M, 4) in pixels) so boxes stay in step
with the pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

MEAN_BGR = (104, 117, 123)


def zoom_out(rng, img, boxes, max_ratio=2.5):
    h, w = img.shape[:2]
    r = rng.uniform(1.0, max_ratio)
    H, W = int(h * r), int(w * r)
    canvas = np.empty((H, W, 3), np.uint8)
    canvas[:] = MEAN_BGR
    y, x = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
    canvas[y:y + h, x:x + w] = img
    return canvas, boxes + np.array([x, y, x, y], np.float32)


def random_crop(rng, img, boxes, min_scale=0.3, trials=30):
    """SSD-style crop; keeps the boxes whose centres fall inside (clipped to the crop)."""
    h, w = img.shape[:2]
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    for _ in range(trials):
        s = rng.uniform(min_scale, 1.0)
        ar = rng.uniform(0.5, 2.0)
        cw, ch = min(w, int(w * s * np.sqrt(ar))), min(h, int(h * s / np.sqrt(ar)))
        if cw < 16 or ch < 16:
            continue
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        inside = ((centers[:, 0] > x) & (centers[:, 0] < x + cw) &
                  (centers[:, 1] > y) & (centers[:, 1] < y + ch))
        if len(boxes) and not inside.any():
            continue
        kept = boxes[inside] - np.array([x, y, x, y], np.float32)
        kept = np.clip(kept, 0, [cw, ch, cw, ch]).astype(np.float32)
        return img[y:y + ch, x:x + cw], kept, inside
    return img, boxes, np.ones(len(boxes), bool)


def photometric(rng, img):
    out = img.astype(np.float32)
    if rng.random() < 0.5:  # brightness and contrast
        out = out * rng.uniform(0.6, 1.4) + rng.uniform(-32, 32)
    if rng.random() < 0.3:  # colour cast / saturation
        grey = out.mean(-1, keepdims=True)
        out = grey + (out - grey) * rng.uniform(0.5, 1.5)
    out = np.clip(out, 0, 255)
    if rng.random() < 0.4:  # gamma: dim corridors and backlit doors
        out = 255.0 * (out / 255.0) ** rng.uniform(0.5, 1.8)
    img = out.astype(np.uint8)
    if rng.random() < 0.1:  # night / IR cameras are grey
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    r = rng.random()
    if r < 0.15:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), 0)
    elif r < 0.25:  # motion blur of someone walking
        k = int(rng.choice([3, 5, 7]))
        kernel = np.zeros((k, k), np.float32)
        if rng.random() < 0.5:
            kernel[k // 2, :] = 1.0 / k
        else:
            kernel[:, k // 2] = 1.0 / k
        img = cv2.filter2D(img, -1, kernel)
    if rng.random() < 0.15:
        noise = rng.normal(0, rng.uniform(2, 8), img.shape)
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        q = int(rng.integers(30, 90))
        img = cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], 1)
    return img


def augment(rng, img, boxes, out_hw):
    """One training view at ``out_hw`` (h, w); returns (image, boxes in output pixels, the
    indices of the input boxes those are: a crop drops the boxes whose centres fall outside)."""
    boxes = boxes.astype(np.float32)
    kept = np.arange(len(boxes))
    if rng.random() < 0.4:
        img, boxes = zoom_out(rng, img, boxes)
    if rng.random() < 0.8:
        img, boxes, inside = random_crop(rng, img, boxes)
        kept = kept[inside]
    h, w = img.shape[:2]
    oh, ow = out_hw
    interp = [cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_CUBIC][rng.integers(4)]
    img = cv2.resize(img, (ow, oh), interpolation=interp)
    boxes = boxes * np.array([ow / w, oh / h, ow / w, oh / h], np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1].copy()
        boxes = np.stack([ow - boxes[:, 2], boxes[:, 1], ow - boxes[:, 0], boxes[:, 3]], 1)
    return photometric(rng, img), boxes, kept
