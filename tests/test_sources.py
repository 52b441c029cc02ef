import logging
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import FIXTURE_IMAGES
from edge import config
from edge.errors import CameraError
from edge.camera.readers import LatestFrameGrabber, SyncReader, reader_for
from edge.camera.sources import DEMO_CLIP, FolderSource, FrameSource, open_source


def camera(**kw):
    return SimpleNamespace(**{**vars(config.load(None).camera), **kw})


def test_folder_source_in_order_skipping_unreadable(tmp_path, caplog):
    for i, p in enumerate(FIXTURE_IMAGES[:3]):
        shutil.copy(p, tmp_path / f"{i}.jpg")
    (tmp_path / "1b.jpg").write_bytes(b"broken")
    reader = SyncReader(FolderSource(tmp_path)).start()
    shapes = [reader.get().image.shape for _ in range(3)]
    assert reader.get() is None
    assert shapes[0] == np.asarray(__import__("cv2").imread(str(FIXTURE_IMAGES[0]))).shape
    assert "1b.jpg: not a readable image" in caplog.text


def test_demo_clip_is_bundled_and_plays_every_frame():
    assert DEMO_CLIP.is_file()
    reader = reader_for(open_source(camera(source="demo")), camera()).start()
    n = 0
    while (f := reader.get()) is not None:
        n += 1
        assert f.image.shape == (480, 640, 3) and f.index == n
    reader.stop()
    assert n == 158 and reader.dropped == 0


def test_paced_file_drops_stale_frames_for_a_slow_loop():
    grab = reader_for(open_source(camera(source="demo", realtime=True, fps=15)),
                      camera(realtime=True)).start()
    assert isinstance(grab, LatestFrameGrabber)
    got = []
    for _ in range(5):
        f = grab.get(timeout=2)
        got.append(f.index)
        time.sleep(0.3)  # a loop slower than the camera
    grab.stop()
    assert got == sorted(got) and got[-1] - got[0] > len(got)
    assert grab.dropped > 0


class FlakyCamera(FrameSource):
    """A live camera that stops delivering after 5 frames and comes back later."""

    live = True
    name = "flaky"
    fps = 100.0

    def __init__(self):
        self.reads = 0
        self.opens = 0
        self.dead_until = None

    def open(self):
        self.opens += 1
        if self.dead_until and time.monotonic() < self.dead_until:
            raise CameraError("still gone")

    def read(self):
        self.reads += 1
        if self.reads == 6:
            self.dead_until = time.monotonic() + 1.0
        if self.dead_until and time.monotonic() < self.dead_until:
            return None
        time.sleep(0.01)
        return np.zeros((4, 4, 3), np.uint8)


def test_vanishing_camera_is_reopened_with_backoff_and_logged_once(caplog):
    caplog.set_level(logging.WARNING)
    cam = FlakyCamera()
    grab = LatestFrameGrabber(cam, reopen_max_s=0.4).start()
    frames = 0
    end = time.monotonic() + 4
    while time.monotonic() < end and frames < 20:
        if grab.get(timeout=0.5) is not None:
            frames += 1
    grab.stop()
    assert frames == 20, "frames must flow again after the camera comes back"
    assert cam.opens >= 3
    lost = [r for r in caplog.records if "stopped delivering frames" in r.getMessage()]
    back = [r for r in caplog.records if "is back" in r.getMessage()]
    assert len(lost) == 1 and len(back) == 1


@pytest.mark.parametrize("source, message", [
    ("usb:x", "write usb:N"),
    ("/no/such/file.mp4", "no such file or folder"),
])
def test_bad_sources_are_named(source, message):
    with pytest.raises(CameraError, match=message):
        open_source(camera(source=source))


def test_picamera2_missing_says_how_to_install():
    src = open_source(camera(source="picamera2"))
    with pytest.raises(CameraError, match="python3-picamera2"):
        src.open()
