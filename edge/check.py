"""``maskdoor check``: can this appliance run here? One pass/fail line per part."""

from __future__ import annotations

import sys

BROKER_TIMEOUT_S = 5.0  # a real CONNECT: TCP, TLS, credentials, CONNACK


def _line(ok: bool | None, what: str, detail: str) -> bool:
    mark = {True: "PASS", False: "FAIL", None: "SKIP"}[ok]
    print(f"{mark}  {what}: {detail}", flush=True)
    return ok is not False


def check_state_dir(cfg) -> bool:
    """The folder of the event queue: there, writable, synced, with room."""
    if not cfg.mqtt.url:
        return _line(None, "state", "no broker configured (mqtt.url): no event queue on disk")
    import os

    from edge.config import state_dir
    from edge.sinks.outbox import ENTRY
    folder = state_dir(cfg) / "outbox"
    probe = folder / ".check.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"{}")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
        st = os.statvfs(folder)
    except OSError as exc:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
        return _line(False, "state", f"event queue folder {folder}: {exc.strerror or exc}; "
                     "free space on it, make it writable by the service's user, or set "
                     "service.state_dir (events are then kept in memory only)")
    free_mb = st.f_bavail * st.f_frsize / 2**20
    queued = sum(1 for name in os.listdir(folder) if ENTRY.match(name))
    return _line(True, "state", f"event queue folder {folder} is writable ({free_mb:.0f} MB "
                 f"free, {queued} event(s) queued)")


def run_checks(cfg) -> int:
    ok = True
    det = None
    try:
        from edge.inference.tflite import runtime_name, runtime_version
        from edge.service import build_models
        det, cls = build_models(cfg)
        ok &= _line(True, "models", f"detector {det.path.name} {det.describe()} and "
                    f"classifier {cls.path.name} {cls.describe()} load, on "
                    f"{runtime_version(runtime_name(cfg.detector.runtime).split('.')[0])}")
    except Exception as exc:
        ok &= _line(False, "models", str(exc))
    try:
        from edge.camera.sources import open_source
        src = open_source(cfg.camera, lores=det.input_hw if det else None)
        src.open()
        try:
            image = src.read()
        finally:
            src.close()
        if image is None:
            ok &= _line(False, "camera", f"{src.name} opened but gave no frame")
        else:
            ok &= _line(True, "camera", f"{src.name} gives {image.shape[1]}x{image.shape[0]} frames")
    except Exception as exc:
        ok &= _line(False, "camera", str(exc))
    if cfg.mqtt.url:
        from edge.sinks.mqtt import probe_broker
        passed, detail = probe_broker(cfg.mqtt, timeout=BROKER_TIMEOUT_S)
        ok &= _line(passed, "broker", detail)
    else:
        _line(None, "broker", "none configured (mqtt.url); events go to stdout")
    ok &= check_state_dir(cfg)
    if cfg.gpio.enabled:
        from edge.sinks.pins import DoorSignals
        sig = DoorSignals(cfg.gpio)
        try:
            if sig.available:
                ok &= _line(True, "pins", pins_fitted(cfg.gpio))
            else:
                ok &= _line(False, "pins", sig.reason)
        finally:
            sig.close()
    else:
        _line(None, "pins", "disabled (gpio.enabled = false)")
    print("all checks passed" if ok else "some checks failed", file=sys.stderr)
    return 0 if ok else 1


def pins_fitted(gpio) -> str:
    """The parts and their BCM pins, e.g. 'red LED 17, buzzer 27 (BCM); no green LED'."""
    parts = (("red LED", gpio.red_led), ("buzzer", gpio.buzzer), ("green LED", gpio.green_led))
    fitted = ", ".join(f"{name} {pin}" for name, pin in parts if pin >= 0)
    absent = ", ".join(name for name, pin in parts if pin < 0)
    return (f"{fitted} (BCM)" if fitted else "no part fitted") + (f"; no {absent}" if absent
                                                                   else "")
