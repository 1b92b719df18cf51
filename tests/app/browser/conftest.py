"""Browser fixtures for page tests: one headless Chromium per run (harness.browser), reset
for each test, and the test's app served over real HTTP (``site``).

The app is the app tests' (test database, Redis db 15, this run's counter scope, no abuse
limits). Without Chromium the tests skip locally and fail in CI.
"""

from __future__ import annotations

import base64

import pytest
from selenium.webdriver.support.wait import WebDriverWait

from harness.browser import WAIT_S, WINDOW, BrowserMissing, SiteServer, chromium
from tests.servers import CI, ROOT

SCREENSHOTS = ROOT / ".data" / "screenshots"  # git-ignored test artefacts


@pytest.fixture(scope="session")
def chromium_driver(tmp_path_factory):
    try:
        driver = chromium(tmp_path_factory.mktemp("chromium"))
    except BrowserMissing as exc:
        if CI:
            raise
        pytest.skip(str(exc))
    yield driver
    driver.quit()


@pytest.fixture
def site(app):
    """The app on http://127.0.0.1:<port>, recording what it answered."""
    server = SiteServer(app)
    yield server
    server.close()


@pytest.fixture
def browser(chromium_driver, site):
    """The run's Chromium on a blank page in a normal window, with no cookies and nothing
    stored for the site's origin (a port may be reused by a later test)."""
    driver = chromium_driver
    driver.get("about:blank")
    driver.set_window_rect(width=WINDOW[0], height=WINDOW[1])  # also un-minimizes
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd(
        "Storage.clearDataForOrigin", {"origin": site.url, "storageTypes": "all"}
    )
    yield driver
    driver.get("about:blank")


def wait_until(driver, condition, message: str = ""):
    """``condition(driver)``'s first truthy value; fails the test after WAIT_S."""
    return WebDriverWait(driver, WAIT_S).until(condition, message)


@pytest.fixture
def screenshot(browser):
    """``screenshot(name)``: saves the whole page, the window's width wide, as
    .data/screenshots/<name>.png."""

    def save(name: str):
        size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = browser.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    return save
