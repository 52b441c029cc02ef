"""``maskdoor alerts``: a remote subscriber that prints each alert readably as it arrives."""

from __future__ import annotations

import json
import sys
import threading
import time


from edge.mqtt import make_client

TYPES = {"unmasked_face": "NO MASK", "incorrect_mask": "MASK BELOW NOSE"}


def format_alert(event: dict) -> str:
    kind = TYPES.get(event.get("type"), event.get("type", "?"))
    return (f"{event.get('time', '?')}  {event.get('device', '?')}: {kind} "
            f"({event.get('label')} {float(event.get('label_score', 0)):.2f}), "
            f"track {event.get('track_id')}, face {100 * float(event.get('face_width_frac', 0)):.0f}% "
            f"of the frame wide  [{event.get('id')}]")


def watch(url: str, prefix: str = "maskdoor", device: str = "+", count: int | None = None,
          timeout: float | None = None, out=None) -> int:
    out = out or sys.stdout
    client, host, port = make_client(f"maskdoor-alerts-{int(time.time() * 1000) % 10**8}", url=url)
    seen = []
    done = threading.Event()
    topic = f"{prefix}/{device}/events"

    def on_connect(c, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"maskdoor alerts: broker refused: {reason_code}", file=sys.stderr)
            return
        c.subscribe([(topic, 1), (f"{prefix}/{device}/availability", 1)])
        print(f"listening on {host}:{port} for {topic}", file=sys.stderr, flush=True)

    def on_message(c, userdata, msg):
        if msg.topic.endswith("/availability"):
            print(f"{msg.topic.split('/')[-2]} is {msg.payload.decode(errors='replace')}",
                  file=sys.stderr, flush=True)
            return
        try:
            event = json.loads(msg.payload)
        except ValueError:
            print(f"{msg.topic}: not JSON: {msg.payload[:80]!r}", file=sys.stderr)
            return
        out.write(format_alert(event) + "\n")
        out.flush()
        seen.append(event)
        if count is not None and len(seen) >= count:
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
    try:
        done.wait(timeout)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    return 0
