"""``maskdoor bench``: how fast each stage is, on the same frames, beside the peers.

Times are per call at the given thread count, median and 90th percentile over the frames of
the source (the bundled demo clip by default), after ten warm-up calls.
"""

from __future__ import annotations

import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from convert.measure.opcount import estimates, op_counts
from convert.measure.peers import AizooDetector, OpenCVRes10, SeedMaskClassifier, find_weights_dir
from edge import config
from edge.camera.readers import SyncReader, reader_for
from edge.camera.sources import ArraySource, open_source
from edge.door import process_frames
from edge.inference.classifier import load_classifier
from edge.inference.detectors import load_detector
from edge.inference.detectors.tflite_ssd import FaceDetector
from edge.inference.fakes import ScriptedClassifier, ScriptedDetector
from edge.service import build_models
from edge.sinks import SafeSinks
from edge.sinks.preview import LiveView, draw
from edge.sinks.stdout import StdoutSink
from edge.tracking.motion import MotionGate, gate_for
from edge.tracking.policy import DoorPolicy
from edge.tracking.tracker import IoUTracker
from edge.types import Box, Face, Frame


def _frames(source: str, limit: int):
    src = open_source(config.load(None, {"camera.source": source}).camera)
    src.open()
    frames = []
    try:
        while len(frames) < limit and (img := src.read()) is not None:
            frames.append(img)
    finally:
        src.close()
    return frames


def _time(fn, frames, warmup: int = 10) -> dict:
    for f in frames[:warmup]:
        fn(f)
    ms = []
    for f in frames:
        t0 = time.perf_counter()
        fn(f)
        ms.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(ms), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2), "calls": len(ms)}


def _stage_times(det, cls, frames) -> dict:
    """Median ms of each stage of our loop over ``frames`` (classifier: per face)."""
    tracker, policy = IoUTracker(), DoorPolicy("bench")
    t = {k: [] for k in ("preprocess", "detector", "postprocess", "classifier per face",
                         "tracker and policy")}
    for i, img in enumerate(frames):
        faces = _detect_in_stages(det, img, t)
        t0 = time.perf_counter()
        if faces:
            faces = cls.classify(img, faces)
            t["classifier per face"].append((time.perf_counter() - t0) * 1000 / len(faces))
        t1 = time.perf_counter()
        policy.update(Frame(img, i, 0.0), tracker.update(faces))
        t["tracker and policy"].append((time.perf_counter() - t1) * 1000)
    return {k: round(statistics.median(v), 2) for k, v in t.items() if v}


def _detect_in_stages(det, img, t: dict) -> list:
    """Detect, adding the ms of each stage to ``t``; a multi-pass detector is timed whole."""
    t0 = time.perf_counter()
    if not isinstance(det, FaceDetector):
        faces = det.detect(img)
        t["detector"].append((time.perf_counter() - t0) * 1000)
        return faces
    det.preprocess(img)
    t1 = time.perf_counter()
    loc, scores = det.raw()
    t2 = time.perf_counter()
    faces = det.decoder(loc, scores, img.shape[1], img.shape[0])
    t["preprocess"].append((t1 - t0) * 1000)
    t["detector"].append((t2 - t1) * 1000)
    t["postprocess"].append((time.perf_counter() - t2) * 1000)
    return faces


def _empty_scene_cpu(det, cls, image, fps: float = 15.0, frames: int = 150) -> dict:
    """Share of one core that a still, empty scene costs at ``fps``, gating on and off."""

    out = {}
    for name, gate in (("motion gating on", MotionGate()), ("motion gating off", None)):
        t0 = time.process_time()
        still = SyncReader(ArraySource([image] * frames, "still scene")).start()
        process_frames(still, det, cls, IoUTracker(), DoorPolicy("bench"), SafeSinks([]),
                       gate=gate)
        cpu_per_frame = (time.process_time() - t0) / frames
        out[name] = round(100 * cpu_per_frame * fps, 1)
    return out


def _scripted_loop(source: str, frames: int) -> dict:
    """Frames/s of the door loop with a scripted detector and classifier (one unmasked face on
    every frame): the cost of everything but the models."""

    images = _frames(source, frames)
    h, w = images[0].shape[:2]
    one_face = ScriptedDetector([Face(Box(w * 0.4, h * 0.3, w * 0.6, h * 0.6), 0.9)])
    reader = SyncReader(ArraySource(images, source)).start()
    app_log = logging.getLogger("edge.door")
    level = app_log.level
    app_log.setLevel(logging.WARNING)  # the scripted face's alert is not news in a benchmark
    try:
        stats = process_frames(reader, one_face, ScriptedClassifier(), IoUTracker(),
                               DoorPolicy("bench"), SafeSinks([StdoutSink(io.StringIO())]),
                               max_frames=frames)
    finally:
        app_log.setLevel(level)
        reader.stop()
    return stats.summary()


def _loop_fps(source: str, model: str, classifier: str, threads: int, frames: int,
              gate: bool = True, every: int = 1) -> dict:
    """Frames/s of the whole door loop (decode to sinks), in this process."""

    cfg = config.load(None, {"camera.source": source, "detector.model": model,
                             "classifier.model": classifier, "detector.threads": threads,
                             "classifier.threads": threads, "detector.motion_gate": gate,
                             "detector.every": every})
    det, cls = build_models(cfg)
    reader = reader_for(open_source(cfg.camera), cfg.camera).start()
    app_log = logging.getLogger("edge.door")
    level = app_log.level
    app_log.setLevel(logging.WARNING)  # the demo's alert is not news in a benchmark
    try:
        stats = process_frames(reader, det, cls, IoUTracker(), DoorPolicy("bench"),
                               SafeSinks([StdoutSink(io.StringIO())]), max_frames=frames,
                               gate=gate_for(cfg.detector), detect_every=every)
    finally:
        app_log.setLevel(level)
        reader.stop()
    return stats.summary()


def _one_view_run(cfg, det, cls, loop, watch, name: str, frames: int) -> dict:
    """One timed door loop with the live view off, on and idle, or on with one viewer."""
    view = None if name == "view off" else LiveView(cfg, det, cls, port=0).start()
    pulled = [0]
    viewer = None
    if name.endswith("viewer"):
        viewer = threading.Thread(target=watch, args=(f"{view.url}stream.mjpg", pulled))
        viewer.start()
        end = time.monotonic() + 10
        while view.viewers == 0 and time.monotonic() < end:  # timed once the viewer watches
            time.sleep(0.01)
    cpu = time.process_time()
    try:
        r = loop(frames, view)
        cpu = time.process_time() - cpu  # all threads: the view's encodes count too
    finally:
        if view is not None:
            view.close()
        if viewer is not None:
            viewer.join(timeout=30)
    return {"fps": r["fps"], "cpu_ms_per_frame": round(1000 * cpu / r["frames"], 2),
            "encoded_frames": view.encoded if view else 0, "bytes_sent": pulled[0]}


def _view_loop_fps(source: str, model: str, classifier: str, frames: int,
                   rounds: int = 5) -> dict:
    """Frames/s of the door loop with the live view off, on and idle, and on with one viewer
    pulling its MJPEG stream (the view annotates and encodes on its server's threads). The three
    are run in turn, ``rounds`` times over, and each reports its median, so that a machine busy
    with something else for a moment weighs on all three alike."""
    cfg = config.load(None, {"camera.source": source, "detector.model": model,
                             "classifier.model": classifier, "preview.port": 0})
    det, cls = build_models(cfg)

    def loop(n: int, view=None):
        reader = reader_for(open_source(cfg.camera), cfg.camera).start()
        try:
            return process_frames(reader, det, cls, IoUTracker(), DoorPolicy("bench"),
                                  SafeSinks([StdoutSink(io.StringIO())] + ([view] if view else [])),
                                  max_frames=n, gate=gate_for(cfg.detector)).summary()
        finally:
            reader.stop()

    def watch(url: str, pulled: list) -> None:
        try:
            with urllib.request.urlopen(url, timeout=30) as stream:
                while chunk := stream.read(65536):
                    pulled[0] += len(chunk)
        except OSError:
            pass  # the view closed

    quiet = [logging.getLogger(name) for name in ("edge.door", "edge.sinks.preview")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)  # the demo's alert and each view's address are not news here
    modes = ("view off", "view on, idle", "view on, one viewer")
    runs: dict[str, list[dict]] = {name: [] for name in modes}
    try:
        loop(30)  # warm-up
        for _ in range(rounds):
            for name in modes:
                runs[name].append(_one_view_run(cfg, det, cls, loop, watch, name, frames))
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    out = {}
    for name in modes:
        r = runs[name]
        out[name] = {"fps": statistics.median(x["fps"] for x in r),
                     "cpu_ms_per_frame": statistics.median(x["cpu_ms_per_frame"] for x in r),
                     "encoded_frames": max(x["encoded_frames"] for x in r),
                     "bytes_sent": max(x["bytes_sent"] for x in r),
                     "fps_each_round": [x["fps"] for x in r]}
    off = out["view off"]["fps"]
    out["idle / off"] = round(out["view on, idle"]["fps"] / off, 3)
    out["one viewer / off"] = round(out["view on, one viewer"]["fps"] / off, 3)
    out["one viewer, cpu ms per frame"] = round(out["view on, one viewer"]["cpu_ms_per_frame"] -
                                                out["view off"]["cpu_ms_per_frame"], 2)
    # the same costs timed alone, steadier than the differences above on a busy machine
    images = _frames(source, 30)
    view = LiveView(cfg, det, cls, port=0)
    try:
        frame = Frame(images[0], 0, 0.0)
        t0 = time.perf_counter()
        for _ in range(10000):
            view.on_frame(frame, [])
        out["hand_off_us"] = round((time.perf_counter() - t0) / 10000 * 1e6, 2)
        out["encode_ms"] = _time(lambda img: cv2.imencode(
            ".jpg", draw(img, [], cfg.policy.min_face_width_frac),
            [cv2.IMWRITE_JPEG_QUALITY, cfg.preview.jpeg_quality]), images)["median_ms"]
    finally:
        view.close()
    return out


def _run_subprocess(source: str, model: str, classifier: str, frames: int) -> dict:
    """Start-up time and peak memory of a real `maskdoor run` (its own process)."""
    exe = Path(sys.executable).parent / "maskdoor"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "run.json"
        cfg = Path(tmp) / "config.toml"
        cfg.write_text(f"[detector]\nmodel = {json.dumps(model)}\n"
                       f"[classifier]\nmodel = {json.dumps(classifier)}\n")
        env = {**os.environ, "MASKDOOR_RUN_REPORT": str(report), "STATE_DIRECTORY": tmp}
        cmd = [str(exe), "run", "--config", str(cfg), "--source", source,
               "--max-frames", str(frames)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or not report.is_file():
            return {"error": f"`{' '.join(cmd)}` exited {proc.returncode}"}
        r = json.loads(report.read_text())
    # The child's own high-water mark: its rusage can count memory from before exec.
    peak = r.get("peak_rss_mb") or round(usage.ru_maxrss / 1024, 1)
    return {"first_frame_after_start_s": r["first_frame_after_start_s"], "peak_rss_mb": peak,
            "fps": r["fps"]}


def _peer_fps(frames, detect, classify=None) -> float:
    t0 = time.perf_counter()
    for img in frames:
        faces = detect(img)
        if classify is not None and faces:
            classify(img, faces)
    return round(len(frames) / (time.perf_counter() - t0), 2)


def _estimates(det, cls) -> dict:
    """MACs of each model and estimated ms on devices that are not here (convert.measure.opcount)."""
    out = {}
    for name, paths in (("detector", det.model_paths()), ("classifier per face", cls.model_paths())):
        macs = sum(op_counts(p)[0] for p in paths)
        out[name] = {"model": "+".join(p.name for p in paths), "mmacs": round(macs / 1e6, 1),
                     "estimated_ms": estimates(macs)}
    return out


def run_bench(args) -> int:


    frames = _frames(args.source, args.frames)
    det = load_detector(args.model, threads=args.threads)
    cls = load_classifier(args.classifier, threads=args.threads)
    rows = {f"maskdoor detector {det.describe()}":
            _time(det.detect, frames)}
    found = [det.detect(f) for f in frames]
    faces = [(f, fs[0]) for f, fs in zip(frames, found) if fs]
    if faces:
        rows[f"maskdoor classifier {cls.describe()}, per face"] = _time(
            lambda fd: cls.classify(fd[0], [fd[1]]), faces)
        for batch in (True, False):  # four faces in a frame: one batch, or one call each
            many = load_classifier(args.classifier, threads=args.threads, batch=batch)
            r = _time(lambda fd: many.classify(fd[0], [fd[1]] * 4), faces)
            rows[f"maskdoor classifier, 4 faces {'in one batch' if batch else 'one by one'}, "
                 "per face"] = {k: round(v / 4, 2) if k != "calls" else v for k, v in r.items()}
    one_face = [f for f, fs in zip(frames, found) if len(fs) == 1]
    if one_face:
        rows["maskdoor detector + classifier, frames with one face"] = _time(
            lambda f: cls.classify(f, det.detect(f)), one_face)
    report = {"source": args.source, "frames": len(frames), "threads": args.threads,
              "rows": rows, "stages_ms": _stage_times(det, cls, frames)}
    all_cores = os.cpu_count() or 1
    model = str(args.model)
    report["model"] = model
    mc = str(cls.path)
    report["classifier"] = mc
    report["loop"] = {"1 thread": _loop_fps(args.source, model, mc, 1, args.frames),
                      f"{all_cores} threads": _loop_fps(args.source, model, mc, all_cores,
                                                        args.frames),
                      "1 thread, no motion gating": _loop_fps(args.source, model, mc, 1,
                                                              args.frames, gate=False),
                      "1 thread, detector every 2nd frame": _loop_fps(args.source, model, mc, 1,
                                                                      args.frames, every=2),
                      "scripted detector and classifier (all but the models)":
                          _scripted_loop(args.source, args.frames)}
    report["empty_scene_15fps_percent_of_one_core"] = _empty_scene_cpu(det, cls, frames[0])
    report["live_view"] = _view_loop_fps(args.source, model, mc, args.frames)
    report["process"] = _run_subprocess(args.source, model, mc, args.frames)
    weights = args.peers or find_weights_dir(Path.cwd(), Path(__file__).resolve().parent)
    peers = {}
    if weights is not None and str(weights) != "none":
        try:
            res10 = OpenCVRes10(weights, threads=args.threads)
            rows["opencv res10 float 300x300 (cv2.dnn)"] = _time(res10.detect, frames)
            try:
                seed = SeedMaskClassifier()
                seed.classify(frames[0], res10.detect(frames[0]))  # warm up TensorFlow
                peers["seed: res10 float + keras 224"] = _peer_fps(frames, res10.detect,
                                                                   seed.classify)
            except Exception as exc:
                print(f"maskdoor bench: seed pipeline row skipped: {exc}")
        except Exception as exc:
            print(f"maskdoor bench: res10 rows skipped: {exc}")
        try:
            aizoo = AizooDetector(weights, threads=args.threads)
            peers["aizoo ssd float"] = _peer_fps(frames, aizoo.detect)
        except Exception as exc:
            print(f"maskdoor bench: AIZOO row skipped: {exc}")
    ours = report["loop"]["1 thread"]["fps"]
    report["estimates"] = _estimates(det, cls)
    report["peers_fps"] = peers
    report["ratio_vs_peers"] = {k: round(ours / v, 2) for k, v in peers.items() if v}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{len(frames)} frames of {args.source}, {args.threads} thread(s), per call:")
    print("stage".ljust(52) + "median ms".rjust(11) + "p90 ms".rjust(9))
    for name, r in rows.items():
        print(name.ljust(52) + f"{r['median_ms']:.2f}".rjust(11) + f"{r['p90_ms']:.2f}".rjust(9))
    print("our loop by stage, median ms: " + ", ".join(
        f"{k} {v:.2f}" for k, v in report["stages_ms"].items()))
    for name, r in report["loop"].items():
        print(f"whole loop (decode to sinks), {name}: {r['fps']:.1f} frames/s; median ms: " +
              ", ".join(f"{k} {v:.2f}" for k, v in r["stage_ms"].items()))
    print("empty scene at 15 frames/s, share of one core: " + ", ".join(
        f"{k} {v:.1f}%" for k, v in report["empty_scene_15fps_percent_of_one_core"].items()))
    v = report["live_view"]
    print("whole loop with the live view, 1 thread: " + ", ".join(
        f"{k} {r['fps']:.1f} frames/s" for k, r in v.items() if isinstance(r, dict)) +
        f"; CPU ms per frame " + ", ".join(
            f"{k} {r['cpu_ms_per_frame']:.1f}" for k, r in v.items() if isinstance(r, dict)) +
        f" ({v['view on, one viewer']['encoded_frames']} frames encoded for the viewer); "
        f"median of {len(v['view off']['fps_each_round'])} rounds: idle / off "
        f"{v['idle / off']:.3f}, one viewer / off {v['one viewer / off']:.3f}; "
        f"timed alone: hand-off {v['hand_off_us']:.1f} us a loop frame, annotate and encode "
        f"{v['encode_ms']:.1f} ms a view frame")
    p = report["process"]
    if "error" in p:
        print(f"maskdoor run: {p['error']}")
    else:
        print(f"maskdoor run: first frame {p['first_frame_after_start_s']:.2f} s after the process "
              f"started, peak RSS {p['peak_rss_mb']:.0f} MB")
    for name, fps in peers.items():
        print(f"{name}: {fps:.1f} frames/s at 1 thread on the same frames; maskdoor (1 thread) is "
              f"{report['ratio_vs_peers'][name]:.1f}x")
    print("ESTIMATES, not measured (published MobileNetV2 times scaled by MACs; see "
          "convert/measure/opcount.py):")
    for name, e in report["estimates"].items():
        print(f"  {name} {e['model']}: {e['mmacs']:.0f} M MACs; " + ", ".join(
            f"{dev} ~{ms:.1f} ms" for dev, ms in e["estimated_ms"].items()))
    return 0
