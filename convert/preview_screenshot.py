"""A screenshot of the live view on the bundled demo clip, for the README:

    python -m convert.preview_screenshot docs/preview.png

It runs `maskdoor run --source demo` with the view on a free loopback port and opens the page in
Debian's chromium through its chromium-driver (apt-get install chromium chromium-driver) with
selenium; nothing is downloaded. The tests drive the browser through :func:`chromium`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run")


def missing_browser() -> str | None:
    """Why the browser cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).is_file():
            return f"{path} not found (apt-get install {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


def chromium(profile_dir: str | Path, width: int = 1280, height: int = 900):
    """Headless chromium driven by the system's chromedriver, with a fresh profile. Both paths
    are given, so selenium never runs its manager (which would download a driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert.preview_screenshot",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="PNG to write, e.g. docs/preview.png")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args(argv)
    why = missing_browser()
    if why:
        print(f"preview_screenshot: {why}", file=sys.stderr)
        return 2
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "door.toml"
        conf.write_text("[camera]\nsource = 'demo'\nloop = true\nrealtime = true\n"
                        f"[service]\nstate_dir = '{tmp}/state'\n")
        exe = Path(sys.executable).parent / "maskdoor"
        door = subprocess.Popen([str(exe), "run", "--config", str(conf), "--preview", str(port)],
                                env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        driver = None
        try:
            end = time.time() + args.timeout
            while time.time() < end and status(port) is None:
                time.sleep(0.2)
            driver = chromium(Path(tmp) / "profile")
            driver.get(f"http://127.0.0.1:{port}/")
            # the moment to show: the alert listed, the unmasked face still close and boxed
            while time.time() < end:
                s = status(port)
                if s and s["alerts"] and s["nearest"] and s["nearest"]["close"] and \
                        s["faces"][0]["verdict"] == "without_mask":
                    break
                time.sleep(0.1)
            else:
                print("preview_screenshot: the demo's alert never showed", file=sys.stderr)
                return 1
            time.sleep(0.5)  # the page's next status poll
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
            print(f"wrote {args.out}")
        finally:
            if driver is not None:
                driver.quit()
            door.terminate()
            door.wait(timeout=30)
            shutil.rmtree(Path(tmp) / "profile", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
