"""``maskdoor run``: build the appliance from its config and run the door loop."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from edge import config as configuration
from edge import defaults
from edge.door import RunStats, process_frames
from edge.sinks import SafeSinks
from edge.sdnotify import Notifier

log = logging.getLogger("maskdoor.run")


def process_start_time() -> float:
    """Wall-clock time at which this process started (Linux /proc; now, elsewhere)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM: since its exec, unlike a child's rusage)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


SMALLEST_FACE_PX = 24  # at the detector's input; smaller faces are often missed


def build_models(cfg):
    from edge.inference.classifier import load_classifier
    from edge.inference.detectors import load_detector
    from models import FACE_DETECTOR, detector_path
    det = load_detector(detector_path(cfg.detector.model or defaults.DOOR.detector),
                        threads=cfg.detector.threads, threshold=cfg.detector.threshold or None,
                        edgetpu=cfg.detector.edgetpu, runtime=cfg.detector.runtime)
    close_px = cfg.policy.min_face_width_frac * det.input_hw[1]
    if close_px < SMALLEST_FACE_PX:
        fix = ("raise" if FACE_DETECTOR in det.model_paths()
               else "set detector.model = 'full' or raise")
        log.warning("a face at policy.min_face_width_frac = %g is only %.0f px wide at the "
                    "detector's %dx%d input, too small to find reliably: %s "
                    "policy.min_face_width_frac", cfg.policy.min_face_width_frac, close_px,
                    det.input_hw[1], det.input_hw[0], fix)
    cls = load_classifier(cfg.classifier.model or defaults.DOOR.classifier,
                          threads=cfg.classifier.threads, edgetpu=cfg.classifier.edgetpu,
                          runtime=cfg.detector.runtime)
    return det, cls


def build_sinks(cfg, device_id: str):
    """The sinks in the order the door loop must call them: the one that keeps each event (the
    MQTT outbox, synced to disk, or stdout) first, then the LED and buzzer."""
    from edge.sinks.outbox import Outbox
    from edge.sinks.pins import DoorSignals
    if cfg.mqtt.url:
        from edge.sinks.mqtt import MqttSink
        # never raises: a state folder that cannot be used leaves the queue in memory, logged
        outbox = Outbox(configuration.state_dir(cfg) / "outbox", cfg.mqtt.queue_max)
        keeper = MqttSink(cfg.mqtt, device_id, outbox)
        if len(outbox):
            log.info("%d event(s) queued from an earlier run will be sent", len(outbox))
        keeper.start()
    else:
        from edge.sinks.stdout import StdoutSink
        log.info("no MQTT broker configured (mqtt.url): events go to stdout as JSON lines")
        keeper = StdoutSink()
    return [keeper, DoorSignals(cfg.gpio)]


def run(cfg, max_frames: int | None = None, stop: threading.Event | None = None) -> int:
    from edge.tracking.motion import gate_for
    from edge.tracking.policy import DoorPolicy
    from edge.camera.sources import open_source
    from edge.camera.readers import reader_for
    from edge.tracking.tracker import IoUTracker

    notifier = Notifier()
    device_id = cfg.mqtt.device_id  # the config fills it from the host name when left empty
    stop = stop or threading.Event()

    def on_signal(signum, _frame):
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    detector, classifier = build_models(cfg)
    from edge.sinks.preview import for_run as live_view_for
    view = live_view_for(cfg, detector, classifier)  # bound before any thread starts
    source = open_source(cfg.camera, lores=detector.input_hw)
    reader = reader_for(source, cfg.camera).start()
    sinks = SafeSinks(build_sinks(cfg, device_id) + ([view] if view else []))
    run_stats = RunStats()
    if view:
        view.watch(sinks.sinks, run_stats)
        view.start()
    try:
        tracker = IoUTracker(cfg.tracker.iou, cfg.tracker.max_missed, cfg.tracker.votes)
        policy = DoorPolicy(device_id, cfg.policy.min_face_width_frac, cfg.policy.unmasked_frames,
                            cfg.policy.alarm_on_incorrect_mask, cfg.policy.cooldown_s)
        log.info("watching %s as %s (detector %s %s)", source.name, device_id,
                 detector.path.name, detector.describe())
        notifier.ready(f"watching {source.name}")
        stats = process_frames(reader, detector, classifier, tracker, policy, sinks,
                               max_frames=max_frames, stop=stop, notifier=notifier,
                               stats_interval_s=cfg.mqtt.stats_interval_s,
                               snapshot=cfg.mqtt.snapshot, gate=gate_for(cfg.detector),
                               detect_every=cfg.detector.every, stats=run_stats)
        summary = stats.summary(reader.dropped)
        log.info("stopped after %d frames (%.1f fps), %d alert(s), %d dropped frame(s)",
                 summary["frames"], summary["fps"], summary["events"], summary["dropped_frames"])
        report = os.environ.get("MASKDOOR_RUN_REPORT")
        if report:  # for `maskdoor bench`: how this run went, measured from inside
            first = (stats.first_frame_wall - process_start_time()
                     if stats.first_frame_wall else None)
            Path(report).write_text(json.dumps({**summary, "first_frame_after_start_s":
                                                round(first, 3) if first is not None else None,
                                                "peak_rss_mb": peak_rss_mb()}))
    finally:
        notifier.stopping()
        reader.stop()
        sinks.close()
        for s, h in previous.items():
            signal.signal(s, h)
    return 0
