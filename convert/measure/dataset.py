"""Pascal VOC face-mask datasets as in ``shared/data``: images, boxes, labels and splits."""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge.errors import DatasetError
from edge.types import Box, box_array

CLASSES = ("with_mask", "without_mask", "incorrect_mask")


@dataclass(frozen=True)
class Annotation:
    box: Box
    label: str


@dataclass(frozen=True)
class Sample:
    image: Path
    width: int
    height: int
    objects: tuple[Annotation, ...]
    split: str | None = None
    unlabelled: tuple[Box, ...] = ()  # audited visible faces the annotation lacks

    @property
    def unlabelled_boxes(self) -> np.ndarray:
        return box_array(self.unlabelled)

    @property
    def boxes(self) -> np.ndarray:
        """The annotated boxes as an (N, 4) array of x1, y1, x2, y2 pixels."""
        return box_array(o.box for o in self.objects)

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.objects]


def read_voc(xml_path: Path, image_path: Path) -> Sample:
    try:
        root = ET.parse(xml_path).getroot()
        size = root.find("size")
        width, height = int(size.findtext("width")), int(size.findtext("height"))
        objects = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            box = Box(*(float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
            objects.append(Annotation(box, obj.findtext("name").strip()))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise DatasetError(f"{xml_path}: not a valid Pascal VOC annotation ({exc})") from exc
    return Sample(image_path, width, height, tuple(objects))


def find_splits_csv(folder: Path) -> Path | None:
    """The nearest ``splits.csv`` in ``folder`` or one of its parents."""
    for d in [folder, *folder.parents]:
        if (d / "splits.csv").is_file():
            return d / "splits.csv"
    return None


def load_voc_dataset(folder: str | Path, split: str | None = None) -> list[Sample]:
    """Every ``images/X.jpg`` + ``annotations/X.xml`` pair below ``folder``.

    With ``split``, keep only images that the nearest ``splits.csv`` (columns image, split, paths
    relative to the csv's folder) assigns to it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder not found: {folder}")
    xmls = sorted(folder.rglob("annotations/*.xml"))
    if not xmls:
        raise DatasetError(f"{folder}: no Pascal VOC annotations (annotations/*.xml) found below it")
    splits: dict[Path, str] = {}
    csv_path = find_splits_csv(folder.resolve())
    if csv_path is not None:
        with csv_path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                splits[(csv_path.parent / row["image"]).resolve()] = row["split"]
    elif split is not None:
        raise DatasetError(f"{folder}: --split {split} given but no splits.csv found in it or above")
    samples = []
    for xml in xmls:
        images = xml.parent.parent / "images"
        candidates = [images / (xml.stem + ext) for ext in (".jpg", ".png", ".jpeg", ".JPG")]
        image = next((c for c in candidates if c.is_file()), None)
        if image is None:
            continue
        s = read_voc(xml, image)
        sp = splits.get(image.resolve())
        if split is not None and sp != split:
            continue
        samples.append(Sample(s.image, s.width, s.height, s.objects, sp))
    if not samples:
        raise DatasetError(f"{folder}: no annotated images" + (f" in split {split!r}" if split else ""))
    return samples


UNLABELLED_COLUMNS = ("image", "x1", "y1", "x2", "y2")


def add_unlabelled(samples: list[Sample], csv_path: str | Path) -> tuple[list[Sample], int]:
    """Attach the audited unlabelled faces of ``csv_path`` to ``samples``.

    The csv has columns image, x1, y1, x2, y2 (pixels); ``image`` is a path as in splits.csv and
    matches the sample whose image path ends with it. Returns the samples and how many boxes fell
    on them (rows for images outside ``samples``, e.g. another split, are skipped)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"unlabelled-faces file not found: {csv_path}")
    by_image: dict[str, list[Box]] = {}
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(UNLABELLED_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{csv_path}: needs the columns {', '.join(UNLABELLED_COLUMNS)}; "
                               f"missing {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                box = Box(*(float(row[k]) for k in UNLABELLED_COLUMNS[1:]))
            except (TypeError, ValueError):
                raise DatasetError(f"{csv_path}, line {line}: x1, y1, x2, y2 must be numbers "
                                   f"(pixels), got {[row[k] for k in UNLABELLED_COLUMNS[1:]]}")
            if not (box.x2 > box.x1 and box.y2 > box.y1):
                raise DatasetError(f"{csv_path}, line {line}: empty box (need x2 > x1, y2 > y1)")
            by_image.setdefault(Path(row["image"]).as_posix(), []).append(box)
    out, used = [], 0
    for s in samples:
        parts = s.image.resolve().parts
        key = next((k for k in ("/".join(parts[-n:]) for n in range(1, len(parts) + 1))
                    if k in by_image), None)
        boxes = tuple(by_image.get(key, ()))
        used += len(boxes)
        out.append(replace(s, unlabelled=s.unlabelled + boxes))
    return out, used
