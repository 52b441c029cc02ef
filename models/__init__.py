"""maskdoor's shipped int8 models; see MODEL_CARD.md beside this file."""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
FACE_DETECTOR = MODELS_DIR / "face_detector.tflite"            # 448x448: faces near and far
FACE_DETECTOR_DOOR = MODELS_DIR / "face_detector_door.tflite"  # 256x256: faces close to the door
MASK_CLASSIFIER = MODELS_DIR / "mask_classifier.tflite"           # 96x96, alone: 'single'
MASK_CLASSIFIER_160 = MODELS_DIR / "mask_classifier_160.tflite"   # 160x160, a member of 'pair'
MASK_CLASSIFIER_PAIR = MODELS_DIR / "mask_classifier_pair.json"   # 96 + 160 averaged: 'pair'
FACE_VERIFIER = MODELS_DIR / "face_verifier.tflite"  # 96x96 second look at each proposal
FACE_DETECTOR_VERIFIED = MODELS_DIR / "face_detector_verified.json"  # `full` + the verifier
FACE_DETECTOR_4PASS = MODELS_DIR / "face_detector_4pass.json"  # 448 x2, 544, 768, fused
FACE_DETECTOR_ACCURATE = MODELS_DIR / "face_detector_accurate.json"  # the 4 passes + the verifier
DETECTORS = {"full": FACE_DETECTOR, "door": FACE_DETECTOR_DOOR, "accurate": FACE_DETECTOR_ACCURATE,
             "verified": FACE_DETECTOR_VERIFIED}


def detector_path(name: str | Path) -> Path:
    """'door', 'full', 'verified' or 'accurate' -> the shipped detector of that name; anything else is a path."""
    return DETECTORS.get(str(name), Path(name))


CLASSIFIERS = {"pair": MASK_CLASSIFIER_PAIR, "single": MASK_CLASSIFIER}


def classifier_path(name: str | Path) -> Path:
    """'pair' or 'single' -> the shipped classifier of that name; anything else is a path."""
    return CLASSIFIERS.get(str(name), Path(name))
