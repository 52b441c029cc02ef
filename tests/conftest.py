import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_IMAGES = sorted((FIXTURES / "andrewmvd" / "images").glob("*.jpg"))

os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="keras-home-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    d = SHARED / "weights"
    if not (d / "deploy.prototxt").is_file():
        pytest.skip(f"shared weights not found at {d}")
    return d


def needs_tensorflow():
    return pytest.importorskip("tensorflow")
