"""``python -m convert``: rebuild, train and quantise maskdoor's models on a workstation."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MODELS = ROOT / "models"
RUNS = ROOT / "runs"
TUNE_CHOICES = (">=40", "door")  # convert.detector.TUNE_RANGES, without importing TensorFlow


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
    p.add_argument("--out", type=Path, default=RUNS / out)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)


def tune_arg(p: argparse.ArgumentParser, flag: str, text: str) -> None:
    """An option naming the faces whose val figures decide (convert.detector.TUNE_RANGES)."""
    p.add_argument(flag, choices=TUNE_CHOICES, default=">=40", help=text)


# --- detector ----------------------------------------------------------------------------------

def detector_train_args(p: argparse.ArgumentParser) -> None:
    training_args(p, "detector", epochs=12, batch_size=16, lr=5e-4)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 320, 384, 448, 512],
                   help="square input sizes drawn per batch (multiples of 64)")
    p.add_argument("--eval-size", type=int, default=448, help="input size for val selection")
    p.add_argument("--init", type=Path, default=None,
                   help="start from these weights (a run's best.weights.h5 of the same --arch) "
                   "instead of the pretrained ones")
    tune_arg(p, "--select-on", "faces whose val recall picks the epoch (default: >=40)")
    p.add_argument("--train-stem", action="store_true",
                   help="train the first blocks too (frozen by default; slower steps)")
    p.add_argument("--ignore", type=Path, default=None,
                   help="regions of train images to ignore (likely unannotated faces), from "
                   "`detector-pseudo-ignore`")
    p.add_argument("--arch", choices=("res10", "mnv2"), default="res10",
                   help="res10: fine-tune OpenCV's face SSD (default); mnv2: SSDLite on the "
                   "ImageNet MobileNetV2 backbone")


def detector_train(args) -> None:
    from convert.detector import TrainOptions, train
    try:
        options = TrainOptions(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, sizes=tuple(args.sizes),
            eval_size=args.eval_size, init=args.init, select_on=args.select_on,
            train_stem=args.train_stem, ignore=args.ignore, arch=args.arch)
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"python -m convert detector-train: error: {exc}")
    train(args.data / "detect", args.weights, args.out, options)


def detector_pseudo_ignore_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=MODELS / "face_detector.tflite")
    p.add_argument("--min-score", type=float, default=0.6,
                   help="detections at least this confident and on no annotated face "
                   "(default: 0.6)")
    p.add_argument("--out", type=Path, default=RUNS / "pseudo_ignore.json")


def detector_pseudo_ignore(args) -> None:
    from convert.detector import pseudo_ignore
    pseudo_ignore(args.model, args.data / "detect", args.out, args.min_score)


def detector_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, default=RUNS / "detector")
    p.add_argument("--out", type=Path, default=MODELS / "face_detector.tflite")
    p.add_argument("--size", type=input_size, default=(448, 448), metavar="N|WxH",
                   help="input size of the exported model: N for N x N, or W x H, e.g. 320x240 "
                   "(default: 448)")
    p.add_argument("--calibration", type=int, default=300, help="train images for calibration")
    tune_arg(p, "--tune-for", "faces whose val precision (0.90) sets the threshold: >= 40 px "
             "wide, or door: >= 10%% of the image width (default: >=40)")


def detector_export(args) -> None:
    from convert.detector import export
    export(args.run, args.weights, args.data / "detect", args.out, args.size, args.calibration,
           args.tune_for)


def detector_threshold_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="the .tflite whose .json gets the threshold")
    tune_arg(p, "--tune-for", "as for detector-export (default: >=40)")


def detector_threshold(args) -> None:
    from convert.detector import choose_threshold
    choose_threshold(args.model, args.data / "detect", args.tune_for)


def detector_multipass_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", type=Path, nargs="+",
                   help="exported detectors (.tflite + .json), in the folder of --out")
    p.add_argument("--out", type=Path, default=MODELS / "face_detector_4pass.json")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="do not also run each model on the mirrored image")
    p.add_argument("--fusion-iou", type=float, default=0.55)
    p.add_argument("--max-face", type=float, default=None, metavar="PX",
                   help="every model with a larger input than the first reports only faces up "
                   "to PX wide at its own input (they are there for small faces); default: no "
                   "limit")


def detector_multipass(args) -> None:
    from convert.detector import write_multipass
    write_multipass(args.out, args.models, args.flip, args.data / "detect", args.fusion_iou,
                    max_face=args.max_face)


# --- mask classifier ---------------------------------------------------------------------------

def classifier_train_args(p: argparse.ArgumentParser) -> None:
    training_args(p, "classifier", epochs=10, batch_size=32, lr=3e-4)
    p.add_argument("--sizes", type=int, nargs="+", default=[128],
                   help="input sizes to train (one run each, in --out/SIZE)")
    p.add_argument("--init", type=Path, default=None,
                   help="continue from these weights (one size only)")


def classifier_train(args) -> None:
    from convert.classifier import train
    for size in args.sizes:
        train(args.data, args.weights, args.out / str(size), size=size, epochs=args.epochs,
              batch_size=args.batch_size, lr=args.lr, cache=args.out / "crops.npz",
              init=args.init)


def classifier_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, default=RUNS / "classifier" / "128")
    p.add_argument("--out", type=Path, default=MODELS / "mask_classifier.tflite")
    p.add_argument("--calibration", type=int, default=400, help="train crops for calibration")


def classifier_export(args) -> None:
    from convert.classifier import export
    export(args.run, args.weights, args.data, args.out, args.calibration)


def classifier_ensemble_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", type=Path, nargs="+",
                   help="exported classifiers (.tflite + .json), in the folder of --out")
    p.add_argument("--out", type=Path, default=MODELS / "mask_classifier_pair.json")
    p.add_argument("--cache", type=Path, default=RUNS / "classifier" / "crops.npz",
                   help="the crop cache of classifier-train (built from the data when missing)")


def classifier_ensemble(args) -> None:
    from convert.classifier import write_ensemble
    write_ensemble(args.out, args.models, args.data, args.cache)


# --- face verifier -----------------------------------------------------------------------------

def verifier_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", type=Path, default=MODELS / "face_detector.tflite",
                   help="the int8 detector whose proposals it learns to verify")
    training_args(p, "verifier", epochs=5, batch_size=32, lr=3e-4)
    p.add_argument("--ignore", type=Path, default=None,
                   help="likely unannotated faces in the train images, not scored as background "
                   "(from `detector-pseudo-ignore`)")


def verifier_train(args) -> None:
    from convert.verifier import proposal_sets, train
    train_set, val_set = proposal_sets(args.detector, args.data, args.out, args.ignore)
    train(train_set, val_set, args.weights, args.out, epochs=args.epochs,
          batch_size=args.batch_size, lr=args.lr)


def verifier_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, default=RUNS / "verifier")
    p.add_argument("--detector", type=Path, default=MODELS / "face_detector.tflite",
                   help="the detector the spec runs (the one the verifier was trained on)")
    p.add_argument("--out", type=Path, default=MODELS / "face_verifier.tflite")
    p.add_argument("--spec", type=Path, default=MODELS / "face_detector_verified.json")


def verifier_export(args) -> None:
    from convert.verifier import export
    export(args.run, args.run / "proposals_train.npz", args.detector, args.data, args.out,
           args.spec)


def verifier_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verifier", type=Path, default=MODELS / "face_verifier.tflite")
    p.add_argument("--detector", type=Path, required=True,
                   help="the detector whose proposals it verifies, in the folder of --spec")
    p.add_argument("--spec", type=Path, required=True, help="the verified detector spec to write")


def verifier_spec(args) -> None:
    from convert.verifier import write_spec
    write_spec(args.verifier, args.detector, args.data, args.spec)


@dataclass(frozen=True)
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


COMMANDS = {
    "detector-train": Command(
        "train the face detector (res10 fine-tuned, or SSDLite-MobileNetV2) on detect/ train, "
        "select on val", detector_train_args, detector_train),
    "detector-pseudo-ignore": Command(
        "find likely unannotated faces in the train images, to ignore in training",
        detector_pseudo_ignore_args, detector_pseudo_ignore),
    "detector-export": Command(
        "quantise the selected detector to int8 TFLite", detector_export_args, detector_export),
    "detector-threshold": Command(
        "choose an exported detector's threshold on val again (sidecar only)",
        detector_threshold_args, detector_threshold),
    "detector-multipass": Command(
        "fuse several exported detectors (and their mirror images) into one detector spec for "
        "photos; threshold chosen on val", detector_multipass_args, detector_multipass),
    "classifier-train": Command(
        "train MobileNetV2 mask classifiers, select on val", classifier_train_args,
        classifier_train),
    "classifier-export": Command(
        "quantise one trained classifier to int8 TFLite", classifier_export_args,
        classifier_export),
    "classifier-ensemble": Command(
        "average several exported classifiers: write the spec, flag threshold chosen on val",
        classifier_ensemble_args, classifier_ensemble),
    "verifier-train": Command(
        "train the face verifier on an exported detector's proposals (detect/ train), select "
        "on val end to end", verifier_train_args, verifier_train),
    "verifier-export": Command(
        "quantise the selected verifier to int8 and write the verified detector spec; alpha and "
        "threshold chosen on val", verifier_export_args, verifier_export),
    "verifier-spec": Command(
        "put an exported verifier behind another detector (a .tflite or a multi-pass spec): "
        "alpha, box step and threshold chosen on val", verifier_spec_args, verifier_spec),
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m convert", description=__doc__)
    ap.add_argument("--data", type=Path, default=SHARED / "data",
                    help="folder with detect/ and classify/ (default: ../shared/data)")
    ap.add_argument("--weights", type=Path, default=SHARED / "weights",
                    help="folder with res10 and MobileNetV2 weights (default: ../shared/weights)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, command in COMMANDS.items():
        command.arguments(sub.add_parser(name, help=command.help, description=command.help))
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    COMMANDS[args.cmd].run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
