"""edge/defaults.py is the one place that chooses the default models: the door's (``run``,
``bench``, the config) and the photos' (``detect``, ``eval``), each printed with its reason."""

import subprocess
import sys
from pathlib import Path

from edge import config, defaults
from edge.cli import build_parser
from edge.inference.classifier import optional_classifier
from edge.service import build_models
from models import classifier_path, detector_path

EXE = str(Path(sys.executable).parent / "maskdoor")


def test_the_door_and_photos_differ_on_purpose():
    assert defaults.DOOR != defaults.PHOTOS
    for choice in (defaults.DOOR, defaults.PHOTOS):
        assert detector_path(choice.detector).is_file()
        assert classifier_path(choice.classifier).is_file()
        assert choice.why


def test_detect_and_eval_take_the_photo_models(monkeypatch):
    monkeypatch.setattr(defaults, "PHOTOS", defaults.Choice("full", "single", "a test's reason"))
    for cmd in (["detect", "x.jpg"], ["eval", "data"]):
        args = build_parser().parse_args(cmd)
        assert args.model == detector_path("full")


def test_detect_without_classifier_flag_uses_the_photo_classifier():
    assert optional_classifier(None).path == classifier_path(defaults.PHOTOS.classifier)
    assert optional_classifier(None, default="single").path == classifier_path("single")


def test_run_and_bench_take_the_door_models(monkeypatch):
    cfg = config.load(None)
    assert (cfg.detector.model, cfg.classifier.model) == (defaults.DOOR.detector,
                                                          defaults.DOOR.classifier)
    det, cls = build_models(cfg)
    assert det.path == detector_path(defaults.DOOR.detector)
    assert cls.path == classifier_path(defaults.DOOR.classifier)
    monkeypatch.setattr(defaults, "DOOR", defaults.Choice("full", "pair", "a test's reason"))
    args = build_parser().parse_args(["bench"])
    assert (args.model, args.classifier) == (detector_path("full"), classifier_path("pair"))


def test_the_config_defaults_come_from_the_same_place():
    """A changed choice in edge.defaults changes the config's defaults (read when the config
    module is first imported, hence a fresh process)."""
    code = ("from edge import defaults\n"
            "defaults.DOOR = defaults.Choice('full', 'pair', 'why')\n"
            "from edge import config\n"
            "cfg = config.load(None)\n"
            "print(cfg.detector.model, cfg.classifier.model)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["full", "pair"], out.stderr


def test_help_names_the_defaults_and_why():
    top = subprocess.run([EXE, "--help"], capture_output=True, text=True, timeout=60).stdout
    flat = " ".join(top.split())
    assert " ".join(defaults.summary().split()) in flat
    for cmd, choice in (("detect", defaults.PHOTOS), ("run", defaults.DOOR)):
        text = " ".join(subprocess.run([EXE, cmd, "--help"], capture_output=True, text=True,
                                       timeout=60).stdout.split())
        assert " ".join(choice.why.split()) in text
