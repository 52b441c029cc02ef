"""maskdoor's shipped int8 models; see MODEL_CARD.md beside this file."""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
FACE_DETECTOR = MODELS_DIR / "face_detector.tflite"
MASK_CLASSIFIER = MODELS_DIR / "mask_classifier.tflite"
