"""``maskdoor bench``: how fast each stage is, on the same frames, beside the peers.

Times are per call at the given thread count, median and 90th percentile over the frames of
the source (the bundled demo clip by default), after two warm-up calls.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np


def _frames(source: str, limit: int):
    from edge import config
    from edge.sources import open_source
    src = open_source(config.load(None, {"camera.source": source}).camera)
    src.open()
    frames = []
    try:
        while len(frames) < limit and (img := src.read()) is not None:
            frames.append(img)
    finally:
        src.close()
    return frames


def _time(fn, frames, warmup: int = 2) -> dict:
    for f in frames[:warmup]:
        fn(f)
    ms = []
    for f in frames:
        t0 = time.perf_counter()
        fn(f)
        ms.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(ms), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2), "calls": len(ms)}


def run_bench(args) -> int:
    from edge.detector import FaceDetector
    from edge.peers import OpenCVRes10, find_weights_dir
    from pathlib import Path

    frames = _frames(args.source, args.frames)
    det = FaceDetector(args.model, threads=args.threads)
    rows = {f"maskdoor detector int8 {det.input_hw[1]}x{det.input_hw[0]} ({det.model.runtime})":
            _time(det.detect, frames)}
    from edge.classifier import MaskClassifier
    from models import MASK_CLASSIFIER
    if MASK_CLASSIFIER.is_file():
        cls = MaskClassifier(MASK_CLASSIFIER, threads=args.threads)
        faces = [(f, d) for f in frames for d in det.detect(f)[:1]]
        if faces:
            rows[f"maskdoor classifier int8 {cls.size}x{cls.size}, per face"] = _time(
                lambda fd: cls.classify(fd[0], [fd[1]]), faces)
    weights = args.peers or find_weights_dir(Path.cwd(), Path(__file__).resolve().parent)
    if weights is not None and str(weights) != "none":
        try:
            res10 = OpenCVRes10(weights, threads=args.threads)
            rows["opencv res10 float 300x300 (cv2.dnn)"] = _time(res10.detect, frames)
        except Exception as exc:
            print(f"maskdoor bench: res10 row skipped: {exc}")
    report = {"source": args.source, "frames": len(frames), "threads": args.threads,
              "rows": rows}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{len(frames)} frames of {args.source}, {args.threads} thread(s), per call:")
    print("stage".ljust(52) + "median ms".rjust(11) + "p90 ms".rjust(9))
    for name, r in rows.items():
        print(name.ljust(52) + f"{r['median_ms']:.2f}".rjust(11) + f"{r['p90_ms']:.2f}".rjust(9))
    return 0
