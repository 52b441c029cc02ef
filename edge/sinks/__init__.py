"""Where the door loop's results go: each sink hears of every alert, every frame's faces and the
periodic stats, and does its one job (MQTT, stdout, LED and buzzer, the live view).

A new sink subclasses :class:`Sink` and overrides the calls it needs; ``edge.service`` puts it in
the list the loop calls through :class:`SafeSinks`.
"""

from __future__ import annotations

import logging

from edge.types import Event, Frame, TrackedFace, Verdict

log = logging.getLogger(__name__)


class Sink:
    """What the door loop calls on each sink, in this order per frame: ``on_event`` for each
    alert, then ``on_state`` and ``on_frame``; ``on_stats`` every ``mqtt.stats_interval_s``;
    ``close`` at shutdown. Every call does nothing unless overridden."""

    def on_event(self, event: Event, jpeg: bytes | None = None) -> None:
        """An alert, with the frame as JPEG when snapshots are on."""

    def on_state(self, faces: int, unmasked: int) -> None:
        """How many faces are in view now, and how many of them are not properly masked."""

    def on_frame(self, frame: Frame, faces: list[TrackedFace]) -> None:
        """This frame and its tracked faces."""

    def on_stats(self, stats: dict) -> None:
        """The run's figures (``edge.door.RunStats.summary``)."""

    def close(self) -> None:
        """The door is stopping."""


class SafeSinks:
    """Calls each sink's ``on_event``/``on_state``/``on_stats`` in the order given; one that
    raises is logged once per kind of failure and the others still run.

    Give the sink that keeps events (the MQTT outbox, stdout) first: an event is then on disk
    before the LED lights or the log names it, so a kill at any moment after either loses
    nothing."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = list(sinks)
        self._failed: set = set()

    def _call(self, call, *args):
        """``call``, a sink's bound method, with ``args``; a failure is logged once per sink and
        method until that call works again."""
        key = (id(call.__self__), call.__name__)
        try:
            call(*args)
            self._failed.discard(key)
        except Exception as exc:  # principle: nothing on the door loop may crash it
            if key not in self._failed:
                self._failed.add(key)
                log.error("%s.%s failed: %s; the door keeps running",
                          type(call.__self__).__name__, call.__name__, exc)

    def event(self, event: Event, jpeg: bytes | None):
        for s in self.sinks:
            self._call(s.on_event, event, jpeg)

    def frame(self, frame: Frame, faces: list[TrackedFace]):
        unmasked = sum(1 for f in faces if f.verdict in Verdict.unmasked())
        for s in self.sinks:
            self._call(s.on_state, len(faces), unmasked)
            self._call(s.on_frame, frame, faces)

    def stats(self, stats: dict):
        for s in self.sinks:
            self._call(s.on_stats, stats)

    def close(self):
        for s in self.sinks:
            self._call(s.close)
