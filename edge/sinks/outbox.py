"""A bounded, ordered, write-ahead queue of event payloads waiting for the broker.

Each event is one file named by a sequence number (``000000000042.json``), written to a temp
file, fsynced and renamed into place before :meth:`Outbox.put` returns, so a power cut or a
kill loses nothing that was queued and a half-written file is never read.

The queue degrades instead of failing: when the folder cannot be created, listed or written
(read-only, full, wrong owner, I/O error), events are kept in memory, in order with those on
disk, and still delivered; the failure is logged once when it starts and once when writing works
again. At start-up, leftover temp files are removed, entries that are not a complete JSON object
are moved to ``quarantine/`` (one message each), and files that are not the queue's own are left
alone. Beyond ``max_items`` the oldest events are dropped and counted in ``dropped`` (kept
across restarts in the file ``dropped``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)

ENTRY = re.compile(r"^\d{12}\.json$")
MEMORY_MAX = 10_000  # events held in memory while the folder cannot be written
ABSENT = {errno.ENOENT, errno.ENOTDIR, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
FIX = "free space on it, make it writable by this user, or set service.state_dir"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def is_event(payload: bytes) -> bool:
    """A complete JSON object: what :meth:`Outbox.put` is given, and nothing less."""
    try:
        return isinstance(json.loads(payload), dict)
    except ValueError:  # includes UnicodeDecodeError
        return False


class Outbox:
    """``put(payload)`` queues, ``peek()`` gives the oldest ``(name, payload)``, ``remove(name)``
    drops it once delivered; ``len()`` counts both what is on disk and what is held in memory."""

    def __init__(self, folder: str | Path, max_items: int = 1000):
        self.folder = Path(folder)
        self.quarantine = self.folder / "quarantine"
        self.max_items = max_items
        self.memory_max = min(max_items, MEMORY_MAX)
        self.dropped = 0
        self._lock = threading.Lock()
        # name -> payload held in memory only, or None for an entry safely on disk
        self._queue: OrderedDict[str, bytes | None] = OrderedDict()
        self._seq = 1
        self._failing: str | None = None  # why the folder cannot be written, while it cannot
        self._listable = True
        self._dropping = False
        self._open()

    # --- start-up -------------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # these errors prove the folder absent, so it can be created later and written
            # without overwriting anything queued; others (access denied) prove nothing
            self._listable = exc.errno in ABSENT
            self._degrade(exc, "cannot be created")
            return
        try:
            names = sorted(os.listdir(self.folder))
        except OSError as exc:
            # an entry possibly on disk but unseen must not be overwritten by a new one of the
            # same name, so an unlistable folder stays unused until the next start
            self._listable = False
            self._degrade(exc, "cannot be opened")
            return
        for name in names:
            if name.endswith(".tmp"):
                self._unlink(name)  # a write cut short: never acknowledged, never delivered
        entries = [n for n in names if ENTRY.match(n)]
        others = [n for n in names if not ENTRY.match(n) and not n.endswith(".tmp")
                  and n not in ("dropped", "quarantine")]
        if others:
            log.info("%s: leaving alone %d file(s) that are not queued events: %s", self.folder,
                     len(others), ", ".join(others[:5]) + (" ..." if len(others) > 5 else ""))
        if entries:
            self._seq = int(entries[-1][:12]) + 1
        for name in entries:
            try:
                payload = (self.folder / name).read_bytes()
            except OSError as exc:
                self._set_aside(name, f"cannot be read ({_why(exc)})")
                continue
            if is_event(payload):
                self._queue[name] = None
            else:
                self._set_aside(name, "is empty" if not payload.strip() else
                                "is not a complete JSON event")
        self._read_dropped()
        self._probe()

    def _read_dropped(self) -> None:
        counter = self.folder / "dropped"
        try:
            text = counter.read_text().strip()
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s cannot be read (%s); the dropped-events count starts again at 0",
                        counter, getattr(exc, "strerror", None) or exc)
            return
        if text.isdigit():
            self.dropped = int(text)
            return
        log.warning("%s holds %r, not a count; the dropped-events count starts again at 0",
                    counter, text[:40])
        self._write_dropped()

    def _probe(self) -> None:
        """Write, fsync and remove a temp file, so that a folder that cannot be written is
        reported at start-up rather than at the first alert."""
        probe = self.folder / ".probe.tmp"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"{}")
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
        except OSError as exc:
            self._unlink(probe.name)
            self._degrade(exc, "cannot be written")

    def _set_aside(self, name: str, why: str) -> None:
        try:
            self.quarantine.mkdir(exist_ok=True)
            target = self.quarantine / name
            n = 1
            while target.exists():
                target, n = self.quarantine / f"{name}.{n}", n + 1
            os.replace(self.folder / name, target)
            where = f"moved to {target}"
        except OSError as exc:
            where = f"left in place: it cannot be moved to {self.quarantine} ({_why(exc)})"
        log.warning("queued event %s %s, so it is not sent; %s", self.folder / name, why, where)

    # --- disk, degrading ------------------------------------------------------------------------
    def _degrade(self, exc: OSError, what: str) -> None:
        if self._failing is None:
            log.error("event queue folder %s %s (%s): events are kept in memory (up to %d) and "
                      "still sent to the broker, but a power cut loses those not yet sent; "
                      "%s%s", self.folder, what, _why(exc), self.memory_max, FIX,
                      "" if self._listable else ", then restart")
        self._failing = _why(exc)

    def _recovered(self) -> None:
        held = [n for n, p in self._queue.items() if p is not None]
        for name in held:
            try:
                self._write(name, self._queue[name])
            except OSError:
                break
            self._queue[name] = None
        left = sum(p is not None for p in self._queue.values())
        log.warning("event queue folder %s can be written again; %d event(s) held in memory "
                    "moved to it%s", self.folder, len(held) - left,
                    f", {left} still in memory" if left else "")
        self._failing = None

    def _write(self, name: str, payload: bytes) -> None:
        tmp = self.folder / (name + ".tmp")
        try:
            if self._failing is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.folder / name)
        except OSError:
            self._unlink(tmp.name)
            raise
        try:  # the rename itself survives a power cut only once the folder is synced
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass  # some file systems cannot sync a folder; the file itself is synced

    def _unlink(self, name: str) -> None:
        try:
            (self.folder / name).unlink(missing_ok=True)
        except OSError:
            pass

    def _write_dropped(self) -> None:
        tmp = self.folder / "dropped.tmp"
        try:  # replaced whole, so a full disk keeps the last count rather than an empty file
            tmp.write_text(str(self.dropped))
            os.replace(tmp, self.folder / "dropped")
        except OSError:
            self._unlink(tmp.name)  # the count is kept in memory; the failure is logged apart

    # --- the queue --------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    @property
    def in_memory(self) -> int:
        """Events held in memory only, because the folder could not be written."""
        with self._lock:
            return sum(p is not None for p in self._queue.values())

    def put(self, payload: bytes) -> None:
        """Queue ``payload``; on disk and synced when this returns, unless the folder cannot be
        written (then in memory, in order, and logged)."""
        with self._lock:
            name = f"{self._seq:012d}.json"
            self._seq += 1
            stored: bytes | None = payload
            if self._listable:
                try:
                    self._write(name, payload)
                    stored = None
                except OSError as exc:
                    self._degrade(exc, "cannot be written")
            self._queue[name] = stored
            if stored is None and self._failing is not None:
                self._recovered()
            self._bound()

    def _bound(self) -> None:
        held = [n for n, p in self._queue.items() if p is not None]
        gone = list(self._queue)[:max(len(self._queue) - self.max_items, 0)]
        gone += held[:max(len(held) - self.memory_max, 0)]
        for name in dict.fromkeys(gone):
            if self._queue.pop(name, b"") is None:
                self._unlink(name)
            self.dropped += 1
        if gone:
            self._write_dropped()
            if not self._dropping:
                self._dropping = True
                log.warning("event queue full (%d events, mqtt.queue_max = %d): dropping the "
                            "oldest while the broker is away, %d dropped so far; raise "
                            "mqtt.queue_max to keep more", len(self._queue), self.max_items,
                            self.dropped)
        else:
            self._drained()

    def _drained(self) -> None:
        if self._dropping and len(self._queue) <= self.max_items // 2:
            self._dropping = False
            log.info("event queue below mqtt.queue_max again; %d event(s) dropped in all",
                     self.dropped)

    def peek(self) -> tuple[str, bytes] | None:
        """The oldest queued ``(name, payload)``; an entry that went bad on disk is set aside."""
        with self._lock:
            while self._queue:
                name, payload = next(iter(self._queue.items()))
                if payload is not None:
                    return name, payload
                try:
                    payload = (self.folder / name).read_bytes()
                except FileNotFoundError:
                    self._queue.pop(name)
                    continue
                except OSError as exc:
                    self._queue.pop(name)
                    self._set_aside(name, f"cannot be read ({_why(exc)})")
                    continue
                if is_event(payload):
                    return name, payload
                self._queue.pop(name)
                self._set_aside(name, "is not a complete JSON event")
            return None

    def remove(self, name: str) -> None:
        """Forget a delivered event (a file that cannot be removed is sent again after a
        restart: at least once, never lost)."""
        with self._lock:
            if self._queue.pop(name, b"") is None:
                try:
                    (self.folder / name).unlink(missing_ok=True)
                except OSError as exc:
                    self._degrade(exc, "cannot be written")
            self._drained()
