"""What the trainers of ``convert/`` share: shuffled batches, the warm-up cosine learning rate,
and a run folder that keeps the best epoch selected on val.

A run folder holds ``history.json`` (one entry per epoch), ``best.weights.h5`` and ``best.json``
(the entry of the best-scoring epoch); the export commands read the last two.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

log = logging.getLogger("convert.training")


class ShuffledBatches(keras.utils.PyDataset):
    """Batches of ``count`` samples, reshuffled every epoch when training; subclasses build
    batch ``i`` from :meth:`indices`."""

    def __init__(self, count: int, batch_size: int, seed: int, train: bool):
        super().__init__()
        self.batch_size, self.train = batch_size, train
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(count)
        self.on_epoch_end()

    def __len__(self):
        return int(np.ceil(len(self.order) / self.batch_size))

    def on_epoch_end(self):
        if self.train:
            self.rng.shuffle(self.order)

    def indices(self, i: int) -> np.ndarray:
        return self.order[i * self.batch_size:(i + 1) * self.batch_size]


def warmup_cosine(lr: float, steps: int, warmup_steps: int | None = None, alpha: float = 0.01):
    """A learning rate that warms up from ``lr / 10`` to ``lr`` over ``warmup_steps`` (a tenth of
    ``steps`` unless given), then follows a cosine down to ``alpha`` of its start."""
    return keras.optimizers.schedules.CosineDecay(
        lr * 0.1, steps, warmup_target=lr,
        warmup_steps=steps // 10 if warmup_steps is None else warmup_steps, alpha=alpha)


class RunRecord:
    """A training run's folder: each epoch's entry goes into ``history.json``; an epoch that
    beats every earlier one on its selection score saves ``best.weights.h5`` and ``best.json``."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.history: list[dict] = []
        self.best_score = -float("inf")

    def add(self, model, entry: dict, score: float, best_extra: dict | None = None) -> bool:
        """Record one epoch; ``best_extra`` goes into ``best.json`` only. True if it is the best."""
        self.history.append(entry)
        improved = score > self.best_score
        if improved:
            self.best_score = score
            model.save_weights(self.out_dir / "best.weights.h5")
            (self.out_dir / "best.json").write_text(
                json.dumps({**entry, **(best_extra or {})}, indent=1))
        (self.out_dir / "history.json").write_text(json.dumps(self.history, indent=1))
        return improved

    def best(self) -> dict:
        return json.loads((self.out_dir / "best.json").read_text())


# After an epoch: (the epoch's val figures, its selection score, what best.json adds).
Validation = Callable[[keras.Model], tuple[dict, float, dict]]


def fit_and_select(model, batches: ShuffledBatches, loss, lr: float, epochs: int,
                   record: RunRecord, validate: Validation, class_weight: dict | None = None,
                   name: str = "") -> dict:
    """Compile ``model`` with Adam on :func:`warmup_cosine` and fit it one epoch at a time;
    after each, ``validate`` scores it on val and ``record`` keeps the best epoch. Returns the
    best epoch's ``best.json``."""
    model.compile(keras.optimizers.Adam(warmup_cosine(lr, len(batches) * epochs)), loss)
    t0 = time.time()
    for epoch in range(1, epochs + 1):
        h = model.fit(batches, epochs=1, class_weight=class_weight, verbose=0)
        figures, score, best_extra = validate(model)
        entry = {"epoch": epoch, "loss": round(h.history["loss"][-1], 4), **figures,
                 "seconds": round(time.time() - t0)}
        log.info("%s epoch %d: %s", name, epoch, json.dumps(entry))
        record.add(model, entry, score, best_extra)
    return record.best()
