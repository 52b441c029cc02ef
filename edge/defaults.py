"""Which shipped models each use runs by default, and why: the one place these choices are made.

The door and photos differ on purpose. At the door the camera gives a new frame every few tens
of milliseconds, the people who matter are close (large faces), and the tracker votes over
several frames, so the fast models are enough and leave the Pi time for every frame. A photo
gets one look, so ``detect`` and ``eval`` spend more time per image to find more faces and
misjudge fewer.

``maskdoor --help`` prints :func:`summary`; the config (``detector.model``,
``classifier.model``), ``maskdoor run`` and ``bench`` take :data:`DOOR`; ``detect`` and ``eval``
take :data:`PHOTOS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    """A shipped detector and classifier (names as in ``models``) and the reason for them."""

    detector: str
    classifier: str
    why: str


DOOR = Choice("door", "single",
              "the live camera: the 256x256 detector and the 96 px classifier keep up with every "
              "frame on a Pi, faces at the door are large, and the tracker votes over frames")
PHOTOS = Choice("verified", "pair",
                "one look per image: the 448x448 detector with a second look at each face, and "
                "two classifiers averaged, find more faces and misjudge fewer, slower")


def summary() -> str:
    """The defaults and their reasons, for ``--help``."""
    return (f"default models: at the door (run, bench) detector '{DOOR.detector}' and classifier "
            f"'{DOOR.classifier}': {DOOR.why}; on photos (detect, eval) detector "
            f"'{PHOTOS.detector}' and classifier '{PHOTOS.classifier}': {PHOTOS.why}.")
