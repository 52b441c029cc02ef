"""The sink that keeps events when no broker is configured: standard output, for the journal."""

from __future__ import annotations

import json
import sys

from edge.sinks import Sink


class StdoutSink(Sink):
    """No broker configured: each event is one JSON line on standard output."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def on_event(self, event, jpeg: bytes | None = None) -> None:
        self.stream.write(json.dumps(event.to_json()) + "\n")
        self.stream.flush()

    def close(self, flush_s: float = 0.0) -> None:
        pass
