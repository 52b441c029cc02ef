"""The ``maskdoor`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from edge import __version__, defaults
from edge.errors import ImageError, MaskdoorError

log = logging.getLogger("maskdoor")


def _add_model_args(p: argparse.ArgumentParser, default: str) -> None:
    from models import detector_path
    p.add_argument("--model", type=detector_path, default=detector_path(default),
                   help="face detector: 'verified' ('full' with a second look at each proposal: "
                   "more faces found at the same precision), 'full' (shipped 448x448), 'door' "
                   "(shipped 256x256), 'accurate' (two detectors at 448, plus 544 and 768 for "
                   "small faces, fused, then the second look: the most faces, slowest), a "
                   ".tflite or a multi-pass or verified .json "
                   f"(default: {default})")
    p.add_argument("--threads", type=int, default=1, help="interpreter CPU threads (default: 1)")
    p.add_argument("--threshold", type=float, default=None,
                   help="face score threshold (default: the model's, chosen on val)")
    p.add_argument("--edgetpu", action="store_true", help="run on a Coral Edge TPU")


def _add_classifier_arg(p: argparse.ArgumentParser, none: str | None, default: str) -> None:
    from models import classifier_path
    p.add_argument("--classifier", type=classifier_path,
                   default=classifier_path(default) if none is None else None,
                   help="mask classifier: 'pair' (shipped 96 and 160 px models, averaged), "
                   "'single' (the 96 px model alone), a .tflite or an ensemble "
                   f".json (default: {default})" + (f"; 'none' {none}" if none else ""))


def _add_runtime_arg(p: argparse.ArgumentParser) -> None:
    from edge.config import SCHEMA
    p.add_argument("--runtime", choices=SCHEMA["detector"].fields["runtime"].choices,
                   help="TFLite interpreter of both models (default: detector.runtime, 'auto')")


def _detector(args):
    from edge.inference.detectors import load_detector
    return load_detector(args.model, threads=args.threads, threshold=args.threshold,
                        edgetpu=args.edgetpu)


def _output_folder(out: Path) -> None:
    """Make ``--out`` before any work is done, or say why it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MaskdoorError(f"--out {out}: a file of that name is in the way; name a folder") \
            from None
    except OSError as exc:
        raise MaskdoorError(f"--out {out}: the folder cannot be made ({exc.strerror}); name a "
                            "folder you can write to") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise MaskdoorError(f"--out {out}: the folder is not writable; name a folder you can "
                            "write to")


def _detect_one(path: Path, args, detector, classifier, written: set[str]) -> None:
    """Find (and classify) the faces in one image, print them, and write its annotated copy;
    ImageError if the image cannot be read or the copy cannot be written."""
    from edge.images import annotate, read_image, save_image
    image = read_image(path)
    t0 = time.perf_counter()
    faces = detector.detect(image)
    if classifier is not None and faces:
        faces = classifier.classify(image, faces)
    ms = (time.perf_counter() - t0) * 1000
    if args.json:
        print(json.dumps({"image": str(path), "width": image.shape[1],
                          "height": image.shape[0], "ms": round(ms, 2),
                          "faces": [f.to_json() for f in faces]}), flush=True)
    else:
        print(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''} ({ms:.1f} ms)")
        for f in faces:
            verdict = f" {f.label} {f.label_score:.2f}" if f.label else ""
            print(f"  box {f.box.as_list(0)} score {f.score:.2f}{verdict}")
    if args.out:
        name = path.name
        stem, n = path.stem, 1
        while name in written:
            name, n = f"{stem}_{n}{path.suffix}", n + 1
        written.add(name)
        save_image(args.out / name, annotate(image, faces))


def cmd_detect(args) -> int:
    from edge.inference.classifier import optional_classifier
    from edge.images import image_files
    if args.out:
        _output_folder(args.out)
    detector = _detector(args)
    classifier = optional_classifier(args.classifier, args.threads, args.edgetpu,
                                     default=defaults.PHOTOS.classifier)
    failed = 0
    written: set[str] = set()
    for arg in args.paths:
        try:
            files = image_files(Path(arg))
        except ImageError as exc:
            print(f"maskdoor detect: {exc}", file=sys.stderr)
            failed += 1
            continue
        for path in files:
            try:
                _detect_one(path, args, detector, classifier, written)
            except ImageError as exc:
                print(f"maskdoor detect: {exc}", file=sys.stderr)
                failed += 1
    if failed:
        print(f"maskdoor detect: {failed} file(s) or folder(s) failed (named above)",
              file=sys.stderr)
    return 1 if failed else 0


# The commands that measure rather than run the door live with the workstation tools, which
# import edge and never the reverse: the device package names them only here, by module, and
# loads one only when it is asked for.
MEASURING = {"eval": "convert.measure.evaluation_run", "bench": "convert.measure.bench"}


def measuring(cmd: str):
    """The module of a measuring command (``MEASURING``), or a MaskdoorError saying what to
    install when this installation lacks the workstation tools."""
    import importlib
    try:
        return importlib.import_module(MEASURING[cmd])
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "convert":
            raise
        raise MaskdoorError(f"the measuring tools ({MEASURING[cmd]}) are missing from this "
                            "installation; reinstall it: pip install 'maskdoor[convert]'"
                            ) from None


def cmd_eval(args) -> int:
    return measuring("eval").run_eval(args)


# command-line flags that override a config key: argparse dest -> (key, flag)
OVERRIDES = {"source": ("camera.source", "--source"), "mqtt": ("mqtt.url", "--mqtt"),
             "device_id": ("mqtt.device_id", "--device-id"),
             "runtime": ("detector.runtime", "--runtime")}


def load_config(args, path: Path | None = None):
    """The validated config of ``run``, ``check`` and ``config --check``: the file (``path``, else
    --config, else the default file if it exists, else the defaults) with the flags over it."""
    from edge import config as configuration
    path = path or args.config
    if path is None and configuration.DEFAULT_PATH.is_file():
        path = configuration.DEFAULT_PATH
    overrides, labels = {}, {}
    for dest, (key, flag) in OVERRIDES.items():
        if getattr(args, dest, None) is not None:
            overrides[key], labels[key] = getattr(args, dest), flag
    if getattr(args, "preview", None):  # the live view, for install time
        from edge.sinks.preview import parse_address
        host, port = parse_address(args.preview)
        overrides.update({"preview.enabled": True, "preview.port": port})
        labels.update({"preview.enabled": "--preview", "preview.port": "--preview"})
        if host:
            overrides["preview.bind"], labels["preview.bind"] = host, "--preview"
    return configuration.load(path, overrides, labels)


def cmd_run(args) -> int:
    from edge.service import run
    cfg = load_config(args)
    logging.getLogger().setLevel(cfg.service.log_level)
    return run(cfg, max_frames=args.max_frames)


def cmd_config(args) -> int:
    from edge import config as configuration
    if args.print_default:
        sys.stdout.write(configuration.default_toml())
        return 0
    path = args.check or args.config or configuration.DEFAULT_PATH
    load_config(args, path)
    print(f"{path}: valid")
    return 0


def cmd_alerts(args) -> int:
    from edge.sinks.alerts import watch
    return watch(args.mqtt, args.prefix, args.device, args.count, args.timeout,
                 keep_as=args.keep_as, as_json=args.json)


def cmd_bench(args) -> int:
    return measuring("bench").run_bench(args)


def cmd_check(args) -> int:
    from edge.check import run_checks
    cfg = load_config(args)
    if args.signals:
        from edge.sinks.signals_check import check_signals
        return check_signals(cfg.gpio)
    return run_checks(cfg)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="maskdoor", description="Warns when someone comes to the "
                                 "door without a face mask.", epilog=defaults.summary())
    ap.add_argument("--version", action="version", version=f"maskdoor {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("detect", help="find faces in image files or folders",
                       epilog=f"default models, for photos: {defaults.PHOTOS.why}")
    d.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    d.add_argument("--json", action="store_true", help="one JSON object per image per line")
    d.add_argument("--out", type=Path, help="write annotated copies into this folder")
    _add_classifier_arg(d, "for faces only", defaults.PHOTOS.classifier)
    _add_model_args(d, defaults.PHOTOS.detector)
    d.set_defaults(func=cmd_detect)

    e = sub.add_parser("eval", help="score the detector on a Pascal VOC dataset",
                       epilog=f"default models, for photos: {defaults.PHOTOS.why}")
    e.add_argument("dataset", type=Path, help="folder with images/ and annotations/ (any depth)")
    e.add_argument("--split", default="test", help="split from splits.csv, or 'all' (default: test)")
    e.add_argument("--json", action="store_true", help="print the full report as JSON")
    e.add_argument("--peers", type=Path, default=None,
                   help="folder with res10's Caffe files for the side-by-side row "
                        "(default: a weights/ folder found beside the dataset); 'none' to skip")
    e.add_argument("--limit", type=int, default=None, help="only the first N images")
    e.add_argument("--unlabelled", type=Path, default=None, metavar="CSV",
                   help="audited visible faces the annotation lacks (columns image, x1, y1, x2, "
                        "y2; image as in splits.csv): also report precision and AP with "
                        "detections on them ignored")
    _add_classifier_arg(e, "to skip", defaults.PHOTOS.classifier)
    e.add_argument("--roc", type=Path, default=None, help="write the classifier's ROC curve PNG")
    _add_model_args(e, defaults.PHOTOS.detector)
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("run", help="run the door appliance (flags override the config file)",
                       epilog=f"default models (detector.model '{defaults.DOOR.detector}', "
                       f"classifier.model '{defaults.DOOR.classifier}'), for the door: "
                       f"{defaults.DOOR.why}")
    r.add_argument("--config", type=Path, default=None,
                   help="TOML config (default: /etc/maskdoor/config.toml if it exists)")
    r.add_argument("--source", help="camera source: picamera2, usb:N, file, URL, folder, demo")
    r.add_argument("--mqtt", metavar="URL", help="broker, mqtt://HOST:PORT")
    r.add_argument("--device-id", help="device id in topics (default: hostname)")
    r.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    r.add_argument("--preview", metavar="[HOST:]PORT",
                   help="serve the live view (to aim the camera and tune the distance) on PORT "
                   "of HOST (default 127.0.0.1; any other address needs preview.password)")
    _add_runtime_arg(r)
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("alerts", help="follow every door's alerts on a broker (each printed once, "
                       "with its door) and the doors going offline and online")
    a.add_argument("--mqtt", metavar="URL", required=True, help="broker, mqtt://HOST:PORT")
    a.add_argument("--prefix", default="maskdoor", help="topic prefix (default: maskdoor)")
    a.add_argument("--device", default="+", metavar="ID",
                   help="follow this door only (default: every door under the prefix)")
    a.add_argument("--keep-as", metavar="NAME",
                   help="subscribe under this fixed client id and let the broker keep the subscription: alerts "
                        "sent while this subscriber is away wait for it")
    a.add_argument("--json", action="store_true", help="print each alert as its JSON payload")
    a.add_argument("--count", type=int, default=None, help="exit after N alerts")
    a.add_argument("--timeout", type=float, default=None, help="exit after N seconds")
    a.set_defaults(func=cmd_alerts)

    b = sub.add_parser("bench", help="latency per stage, frames/s, start-up and memory, beside the peers",
                       epilog=f"default models, the door's: {defaults.DOOR.why}")
    b.add_argument("--source", default="demo", help="frames to time on (default: the demo clip)")
    b.add_argument("--frames", type=int, default=150, help="how many frames (default: 150)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--peers", type=Path, default=None,
                   help="folder with res10's Caffe files (default: ../shared/weights if found)")
    _add_model_args(b, defaults.DOOR.detector)
    _add_classifier_arg(b, None, defaults.DOOR.classifier)
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("config", help="print the default config, or check a config file")
    c.add_argument("--print-default", action="store_true", help="write the commented default")
    c.add_argument("--check", type=Path, help="validate this file")
    c.add_argument("--config", type=Path, default=None, help=argparse.SUPPRESS)
    c.add_argument("--source", help="check with this camera source, as `run --source` would")
    c.add_argument("--mqtt", metavar="URL", help="check with this broker, as `run --mqtt` would")
    c.add_argument("--device-id", help="check with this device id, as `run --device-id` would")
    c.set_defaults(func=cmd_config)

    k = sub.add_parser("check", help="check models, camera, broker and pins: one line each")
    k.add_argument("--config", type=Path, default=None)
    k.add_argument("--source", help="camera source to check instead of the config's")
    k.add_argument("--mqtt", metavar="URL", help="broker to check instead of the config's")
    k.add_argument("--signals", action="store_true",
                   help="only light the LEDs and sound the buzzer, once each, saying which first")
    _add_runtime_arg(k)
    k.set_defaults(func=cmd_check)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except MaskdoorError as exc:
        print(f"maskdoor {args.cmd}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
