"""``maskdoor alerts``: a remote subscriber that follows every door under a prefix (or one door)
and prints each alert readably as it arrives, with the door it came from.

Alerts are QoS 1, so a broker or a bridge may deliver one twice: each is printed once, by its
``id``. Doors going offline or coming online are reported on standard error. With ``keep_as``
the subscriber uses that fixed client id and the broker keeps its subscription (clean_session off):
alerts forwarded while it reconnects, or while it is stopped, wait for it on the broker.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import OrderedDict

from edge.sinks.mqtt import make_client

TYPES = {"unmasked_face": "NO MASK", "incorrect_mask": "MASK BELOW NOSE"}
REMEMBERED_IDS = 10000  # alerts remembered for de-duplication


def format_alert(event: dict) -> str:
    kind = TYPES.get(event.get("type"), event.get("type", "?"))
    return (f"{event.get('time', '?')}  {event.get('device', '?')}: {kind} "
            f"({event.get('label')} {float(event.get('label_score', 0)):.2f}), "
            f"track {event.get('track_id')}, face {100 * float(event.get('face_width_frac', 0)):.0f}% "
            f"of the frame wide  [{event.get('id')}]")


class SeenIds:
    """The last ``limit`` alert ids: ``add(id)`` is False for one already seen."""

    def __init__(self, limit: int = REMEMBERED_IDS):
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, event_id: str) -> bool:
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return True


def watch(url: str, prefix: str = "maskdoor", device: str = "+", count: int | None = None,
          timeout: float | None = None, out=None, keep_as: str | None = None,
          as_json: bool = False) -> int:
    out = out or sys.stdout
    client_id = keep_as or f"maskdoor-alerts-{int(time.time() * 1000) % 10**8}"
    client, host, port = make_client(client_id, url=url, clean_session=keep_as is None)
    client.reconnect_delay_set(0.5, 5)  # a watcher comes back quickly after a broker restart
    seen = SeenIds()
    shown = 0
    done = threading.Event()
    topic = f"{prefix}/{device}/events"
    doors = "every door" if device == "+" else f"door {device}"

    def on_connect(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"maskdoor alerts: broker refused: {reason_code}", file=sys.stderr)
            return
        c.subscribe([(topic, 2), (f"{prefix}/{device}/availability", 1)])
        print(f"listening on {host}:{port} to {doors} under {prefix}/", file=sys.stderr,
              flush=True)

    def on_message(c, userdata, msg):
        nonlocal shown
        if msg.topic.endswith("/availability"):
            print(f"door {msg.topic.split('/')[-2]} is {msg.payload.decode(errors='replace')}",
                  file=sys.stderr, flush=True)
            return
        try:
            event = json.loads(msg.payload)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            print(f"{msg.topic}: not a JSON alert: {msg.payload[:80]!r}", file=sys.stderr)
            return
        if not seen.add(str(event.get("id"))):
            return  # delivered twice (QoS 1 through a bridge or a reconnect): shown once
        out.write((json.dumps(event) if as_json else format_alert(event)) + "\n")
        out.flush()
        shown += 1
        if count is not None and shown >= count:
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        print(f"maskdoor alerts: cannot reach the broker at {host}:{port} ({exc}); is it running, "
              "and is the address right?", file=sys.stderr)
        return 2
    client.loop_start()
    # SIGINT (Ctrl-C) and SIGTERM (kill, systemd) end the watch cleanly, as they end `run`; set
    # here also where SIGINT came in ignored (a shell's background job)
    stopping = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, lambda *_: done.set())
                for s in (signal.SIGINT, signal.SIGTERM)} if stopping else {}
    try:
        done.wait(timeout)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        client.disconnect()
        client.loop_stop()
    return 0
