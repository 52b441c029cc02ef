"""The live view in a real browser (Debian's chromium through chromium-driver and selenium),
against a real `maskdoor run` on the demo clip with a real mosquitto."""

import base64
import re
import time

import pytest

from conftest import free_port
from convert.preview_screenshot import chromium, missing_browser
from test_preview import get, start_door, wait_for

PASSWORD = "door-pw"

pytestmark = pytest.mark.skipif(missing_browser() is not None,
                                reason=f"no browser: {missing_browser()}")


@pytest.fixture
def browser(tmp_path, monkeypatch):
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def refuse(self, *args):
        raise AssertionError("selenium-manager was invoked (it would download a driver)")

    monkeypatch.setattr(SeleniumManager, "binary_paths", refuse)
    driver = chromium(tmp_path / "profile")
    driver.execute_cdp_cmd("Network.enable", {})
    token = base64.b64encode(f"installer:{PASSWORD}".encode()).decode()
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Basic {token}"}})
    yield driver
    driver.quit()


def text_of(driver, css):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    try:
        return " ".join(e.text for e in driver.find_elements("css selector", css))
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def test_the_page_shows_the_door_live_and_its_broker(browser, broker, tmp_path):
    port = free_port()
    (tmp_path / "door").mkdir()
    door = start_door(tmp_path / "door", str(port), PASSWORD,
                      f"[mqtt]\nurl = '{broker.url}'\ndevice_id = 'door9'\n")
    try:
        assert wait_for(lambda: get(port, "/status.json", PASSWORD)[0] == 200), "no view"
        assert get(port, "/status.json")[0] == 401, "without the password: refused"
        assert get(port, "/")[0] == 401

        browser.get(f"http://127.0.0.1:{port}/")
        assert "shows the door camera live" in browser.find_element("tag name", "header").text
        img = browser.find_element("id", "live")
        assert wait_for(lambda: browser.execute_script(
            "return arguments[0].naturalWidth", img) == 640, timeout=30), "the picture renders"
        first = img.screenshot_as_png
        time.sleep(2.0)
        second = img.screenshot_as_png
        assert first != second, "the picture moves"

        widths = wait_for(lambda: re.findall(r"\d+\.\d%", text_of(browser, "#faces .width")),
                          timeout=60)
        assert widths, "each face's width is listed"
        line = wait_for(lambda: text_of(browser, "#config-line"), timeout=60)
        assert re.fullmatch(r"policy\.min_face_width_frac = 0\.\d\d", line), line
        alert = wait_for(lambda: text_of(browser, "#alerts .alert"), timeout=90)
        assert "unmasked_face" in alert and "without_mask" in alert
        assert wait_for(lambda: text_of(browser, "#broker-state") == "connected", timeout=30)
        browser.save_screenshot(str(tmp_path / "preview.png"))
        assert (tmp_path / "preview.png").stat().st_size > 10_000

        broker.stop()
        assert wait_for(lambda: text_of(browser, "#broker-state") == "unreachable",
                        timeout=30), "the broker's loss shows"
        assert "queued" in text_of(browser, "#broker")
    finally:
        door.terminate()
        door.communicate(timeout=30)
    assert door.returncode == 0
