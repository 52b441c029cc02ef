"""``python -m convert``: rebuild, train and quantise maskdoor's models on a workstation."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def input_size(text: str) -> tuple[int, int]:
    """'448' -> (448, 448); '320x240' (width x height) -> (240, 320) as (height, width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 64:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or WxH in pixels, each >= 64")
    return parts[1], parts[0]


def training_args(p: argparse.ArgumentParser, out: str, epochs: int, batch_size: int,
                  lr: float) -> None:
    """The options every training command has: its run folder, epochs, batch and learning rate."""
    p.add_argument("--out", type=Path, default=ROOT / "runs" / out)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert", description=__doc__)
    ap.add_argument("--data", type=Path, default=SHARED / "data",
                    help="folder with detect/ and classify/ (default: ../shared/data)")
    ap.add_argument("--weights", type=Path, default=SHARED / "weights",
                    help="folder with res10 and MobileNetV2 weights (default: ../shared/weights)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("detector-train", help="train the face detector (res10 fine-tuned, or "
                       "SSDLite-MobileNetV2) on detect/ train, select on val")
    training_args(t, "detector", epochs=12, batch_size=16, lr=5e-4)
    t.add_argument("--sizes", type=int, nargs="+", default=[256, 320, 384, 448, 512],
                   help="square input sizes drawn per batch (multiples of 64)")
    t.add_argument("--eval-size", type=int, default=448, help="input size for val selection")
    t.add_argument("--init", type=Path, default=None,
                   help="start from these weights (a run's best.weights.h5) instead of res10's")
    t.add_argument("--select-on", choices=(">=40", "door"), default=">=40",
                   help="faces whose val recall picks the epoch (default: >=40)")
    t.add_argument("--train-stem", action="store_true",
                   help="train the first two blocks too (frozen by default; slower steps)")
    t.add_argument("--ignore", type=Path, default=None,
                   help="regions of train images to ignore (likely unannotated faces), from "
                   "`detector-pseudo-ignore`")
    t.add_argument("--arch", choices=("res10", "mnv2", "mnv2fpn"), default="res10",
                   help="res10: fine-tune OpenCV's face SSD (default); mnv2: SSDLite on the "
                   "ImageNet MobileNetV2 backbone; mnv2fpn: the same with a top-down (FPN) path "
                   "(--init from an mnv2 run copies its layers)")
    t.add_argument("--average", type=float, default=None, metavar="MOMENTUM",
                   help="select and save a moving average of the weights with this momentum "
                   "(e.g. 0.998) instead of the last step's (default: off)")
    t.add_argument("--qat", action="store_true",
                   help="quantisation-aware: train and select through the int8 rounding of "
                   "weights and activations that the export applies (convert/qat.py)")

    g = sub.add_parser("detector-pseudo-ignore",
                       help="find likely unannotated faces in the train images, to ignore in "
                       "training")
    g.add_argument("--model", type=Path, default=ROOT / "models" / "face_detector.tflite")
    g.add_argument("--min-score", type=float, default=0.6,
                   help="detections at least this confident and on no annotated face "
                   "(default: 0.6)")
    g.add_argument("--out", type=Path, default=ROOT / "runs" / "pseudo_ignore.json")

    e = sub.add_parser("detector-export", help="quantise the selected detector to int8 TFLite")
    e.add_argument("--run", type=Path, default=ROOT / "runs" / "detector")
    e.add_argument("--out", type=Path, default=ROOT / "models" / "face_detector.tflite")
    e.add_argument("--size", type=input_size, default=(448, 448), metavar="N|WxH",
                   help="input size of the exported model: N for N x N, or W x H, e.g. 320x240 "
                   "(default: 448)")
    e.add_argument("--calibration", type=int, default=300, help="train images for calibration")
    e.add_argument("--tune-for", choices=(">=40", "door"), default=">=40",
                   help="faces whose val precision (0.90) sets the threshold: >= 40 px wide, or "
                   "door: >= 10%% of the image width (default: >=40)")

    h = sub.add_parser("detector-threshold",
                       help="choose an exported detector's threshold on val again (sidecar only)")
    h.add_argument("model", type=Path, help="the .tflite whose .json gets the threshold")
    h.add_argument("--tune-for", choices=(">=40", "door"), default=">=40")

    m = sub.add_parser("detector-multipass",
                       help="fuse several exported detectors (and their mirror images) into one "
                       "detector spec for photos; threshold chosen on val")
    m.add_argument("models", type=Path, nargs="+",
                   help="exported detectors (.tflite + .json), in the folder of --out")
    m.add_argument("--out", type=Path, default=ROOT / "models" / "face_detector_4pass.json")
    m.add_argument("--no-flip", dest="flip", action="store_false",
                   help="do not also run each model on the mirrored image")
    m.add_argument("--fusion-iou", type=float, default=0.55)
    m.add_argument("--max-face", type=float, default=None, metavar="PX",
                   help="every model with a larger input than the first reports only faces up "
                   "to PX wide at its own input (they are there for small faces); default: no "
                   "limit")

    c = sub.add_parser("classifier-train", help="train MobileNetV2 mask classifiers, select on val")
    training_args(c, "classifier", epochs=10, batch_size=32, lr=3e-4)
    c.add_argument("--sizes", type=int, nargs="+", default=[128],
                   help="input sizes to train (one run each, for the size/latency table)")
    c.add_argument("--init", type=Path, default=None,
                   help="continue from these weights (one size only)")
    c.add_argument("--jitter", choices=("uniform", "detector"), default="uniform",
                   help="how the training crop window strays from the annotated box: 'uniform' "
                   "(size +-15 %%, centre +-8 %%: the shipped models) or 'detector' (Gaussian, "
                   "with the spread measured between the detector's boxes and the annotation)")
    c.add_argument("--boxes-from", default="annotation", metavar="DETECTOR",
                   help="cut the train crops of detect/ faces around this detector's boxes "
                   "('verified', 'full', ..., a .tflite or a spec), where one matches the face "
                   "at IoU >= 0.5, as the device cuts them; default: the annotated boxes")

    x = sub.add_parser("classifier-export", help="quantise one trained classifier to int8 TFLite")
    x.add_argument("--run", type=Path, default=ROOT / "runs" / "classifier" / "128")
    x.add_argument("--out", type=Path, default=ROOT / "models" / "mask_classifier.tflite")
    x.add_argument("--calibration", type=int, default=400, help="train crops for calibration")

    n = sub.add_parser("classifier-ensemble",
                       help="average several exported classifiers: write the spec, flag "
                       "threshold chosen on val")
    n.add_argument("models", type=Path, nargs="+",
                   help="exported classifiers (.tflite + .json), in the folder of --out")
    n.add_argument("--out", type=Path, default=ROOT / "models" / "mask_classifier_pair.json")
    n.add_argument("--cache", type=Path, default=ROOT / "runs" / "classifier" / "crops.npz",
                   help="the crop cache of classifier-train (built from the data when missing)")
    n.add_argument("--boxes-from", default="annotation", metavar="DETECTOR",
                   help="cut the val crops (for the figures and the flag threshold) around this "
                   "detector's boxes, as for members trained with classifier-train --boxes-from")

    v = sub.add_parser("verifier-train",
                       help="train the face verifier on an exported detector's proposals (detect/ "
                       "train), select on val end to end")
    v.add_argument("--detector", type=Path, default=ROOT / "models" / "face_detector.tflite",
                   help="the int8 detector whose proposals it learns to verify")
    training_args(v, "verifier", epochs=5, batch_size=32, lr=3e-4)
    v.add_argument("--ignore", type=Path, default=None,
                   help="likely unannotated faces in the train images, not scored as background "
                   "(from `detector-pseudo-ignore`)")

    y = sub.add_parser("verifier-export",
                       help="quantise the selected verifier to int8 and write the verified "
                       "detector spec; alpha and threshold chosen on val")
    y.add_argument("--run", type=Path, default=ROOT / "runs" / "verifier")
    y.add_argument("--detector", type=Path, default=ROOT / "models" / "face_detector.tflite",
                   help="the detector the spec runs (the one the verifier was trained on)")
    y.add_argument("--out", type=Path, default=ROOT / "models" / "face_verifier.tflite")
    y.add_argument("--spec", type=Path, default=ROOT / "models" / "face_detector_verified.json")

    w = sub.add_parser("verifier-spec",
                       help="put an exported verifier behind another detector (a .tflite or a "
                       "multi-pass spec): alpha, box step and threshold chosen on val")
    w.add_argument("--verifier", type=Path, default=ROOT / "models" / "face_verifier.tflite")
    w.add_argument("--detector", type=Path, required=True,
                   help="the detector whose proposals it verifies, in the folder of --spec")
    w.add_argument("--spec", type=Path, required=True, help="the verified detector spec to write")

    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.cmd == "detector-train":
        from convert.detector import train
        train(args.data / "detect", args.weights, args.out, epochs=args.epochs,
              batch_size=args.batch_size, lr=args.lr, sizes=tuple(args.sizes),
              eval_size=args.eval_size, init=args.init, select_on=args.select_on,
              train_stem=args.train_stem, ignore=args.ignore, arch=args.arch,
              average=args.average, qat=args.qat)
    elif args.cmd == "detector-pseudo-ignore":
        from convert.detector import pseudo_ignore
        pseudo_ignore(args.model, args.data / "detect", args.out, args.min_score)
    elif args.cmd == "detector-export":
        from convert.detector import export
        export(args.run, args.weights, args.data / "detect", args.out, args.size, args.calibration,
               args.tune_for)
    elif args.cmd == "detector-threshold":
        from convert.detector import choose_threshold
        choose_threshold(args.model, args.data / "detect", args.tune_for)
    elif args.cmd == "detector-multipass":
        from convert.detector import write_multipass
        write_multipass(args.out, args.models, args.flip, args.data / "detect", args.fusion_iou,
                        max_face=args.max_face)
    elif args.cmd == "classifier-train":
        from convert.classifier import train as train_classifier
        cache = args.out / "crops.npz"
        for size in args.sizes:
            train_classifier(args.data, args.weights, args.out / str(size), size=size,
                             epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             cache=cache, init=args.init, jitter=args.jitter,
                             boxes_from=args.boxes_from)
    elif args.cmd == "classifier-export":
        from convert.classifier import export as export_classifier
        export_classifier(args.run, args.weights, args.data, args.out, args.calibration)
    elif args.cmd == "classifier-ensemble":
        from convert.classifier import write_ensemble
        write_ensemble(args.out, args.models, args.data, args.cache, args.boxes_from)
    elif args.cmd == "verifier-train":
        from convert.verifier import proposal_sets, train as train_verifier
        tr, va = proposal_sets(args.detector, args.data, args.out, args.ignore)
        train_verifier(tr, va, args.weights, args.out, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr)
    elif args.cmd == "verifier-export":
        from convert.verifier import export as export_verifier
        export_verifier(args.run, args.run / "proposals_train.npz", args.detector, args.data,
                        args.out, args.spec)
    elif args.cmd == "verifier-spec":
        from convert.verifier import write_spec
        write_spec(args.verifier, args.detector, args.data, args.spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
