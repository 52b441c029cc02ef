"""A bounded, ordered, on-disk queue of event payloads waiting for the broker.

One file per event, named by a sequence number and written atomically (temp file + rename), so
a power cut loses nothing that was queued and a half-written file is never read. Beyond
``max_items`` the oldest events are dropped and counted in ``dropped`` (kept across restarts).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class Outbox:
    def __init__(self, folder: str | Path, max_items: int = 1000):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"event queue folder {self.folder} cannot be created ({exc.strerror}); "
                          "set service.state_dir to a writable folder") from exc
        self.max_items = max_items
        self._lock = threading.Lock()
        for tmp in self.folder.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        names = self._names()
        self._seq = int(names[-1].split(".")[0]) + 1 if names else 1
        counter = self.folder / "dropped"
        self.dropped = int(counter.read_text() or 0) if counter.is_file() else 0

    def _names(self) -> list[str]:
        return sorted(p.name for p in self.folder.glob("*.json"))

    def __len__(self) -> int:
        with self._lock:
            return len(self._names())

    def put(self, payload: bytes) -> None:
        with self._lock:
            name = f"{self._seq:012d}.json"
            self._seq += 1
            tmp = self.folder / (name + ".tmp")
            with open(tmp, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / name)
            names = self._names()
            excess = len(names) - self.max_items
            for old in names[:max(excess, 0)]:
                (self.folder / old).unlink(missing_ok=True)
                self.dropped += 1
            if excess > 0:
                (self.folder / "dropped").write_text(str(self.dropped))

    def peek(self) -> tuple[str, bytes] | None:
        with self._lock:
            for name in self._names():
                try:
                    return name, (self.folder / name).read_bytes()
                except FileNotFoundError:
                    continue
            return None

    def remove(self, name: str) -> None:
        with self._lock:
            (self.folder / name).unlink(missing_ok=True)
