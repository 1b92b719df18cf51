"""The operators' dashboard in headless Chromium, served by a real gunicorn with a real
Celery worker and beat flushing every second: it refuses without the admin token, and
with it draws non-empty charts whose latest point moves after a burst of views."""

from __future__ import annotations

import time
import urllib.request

import pytest
from selenium.webdriver.common.by import By

from harness.ports import free_port
from harness.processes import wait_http
from harness.stack import beat_command, web_command, worker_command
from tests.app.conftest import ADMIN_TOKEN, QUEUE, RUN, create, process_env

from .conftest import wait_until

BURST = 30  # views sent at once
# the burst and the poll that shows it stay inside one minute (its sample holds still)
SAFE_SECONDS = (5, 35)

# Pixels a chart's canvas has drawn (axes, grid, the line): 0 on an empty canvas.
DRAWN = """
const canvas = document.querySelector(`[data-chart="${arguments[0]}"] canvas`);
if (!canvas) return 0;
const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let drawn = 0;
for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) drawn += 1;
return drawn;
"""
CANVAS = 'return document.querySelector(`[data-chart="${arguments[0]}"] canvas`).toDataURL();'


@pytest.fixture
def stack(app, app_db, processes):
    """gunicorn, a worker and a beat (flush every second) on the app's database, Redis
    db and scope; yields the web URL."""
    port = free_port()
    env = process_env(
        app_db.url,
        ADMIN_TOKEN=ADMIN_TOKEN,
        CELERY_TASK_DEFAULT_QUEUE=QUEUE,
        COUNTERS_FLUSH_INTERVAL="1",
        RATELIMIT_ENABLED="0",
    )
    web, web_log = processes.start(
        "web", web_command(port, "--workers", "2", "--log-level", "warning"), env
    )
    worker_opts = ("-Q", QUEUE, "-c", "1", "-n", f"dash-{RUN}@%h", "--loglevel=info")
    quiet = ("--without-mingle", "--without-gossip", "--without-heartbeat")
    processes.start("worker", worker_command(*worker_opts, *quiet), env)
    processes.start("beat", beat_command("--loglevel=info"), env)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", procs=[web])
    return url


def send_views(url: str, post: int, n: int) -> None:
    for _ in range(n):
        request = urllib.request.Request(f"{url}/api/posts/{post}/view", method="POST")
        with urllib.request.urlopen(request) as response:
            assert response.status == 204


def chart(browser, name: str) -> dict:
    figure = browser.find_element(By.CSS_SELECTOR, f'[data-chart="{name}"]')
    return {
        "points": int(figure.get_attribute("data-points") or 0),
        "latest": figure.get_attribute("data-latest"),
        "drawn": browser.execute_script(DRAWN, name),
    }


def polls(browser) -> int:
    root = browser.find_element(By.CSS_SELECTOR, "[data-dashboard]")
    return int(root.get_attribute("data-polls") or 0)


def next_poll(browser) -> None:
    seen = polls(browser)
    wait_until(browser, lambda d: polls(d) > seen, "the dashboard did not poll again")


def into_a_safe_part_of_the_minute() -> None:
    second = time.time() % 60
    if not SAFE_SECONDS[0] <= second <= SAFE_SECONDS[1]:
        time.sleep((SAFE_SECONDS[0] - second) % 60)


def test_the_dashboard_refuses_without_the_token(browser, stack, screenshot):
    browser.get(f"{stack}/admin/dashboard/data")
    assert "unauthorized" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(f"{stack}/admin/dashboard")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-dashboard]")
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".error"), "no error shown")
    assert "not the admin token" in browser.find_element(By.CSS_SELECTOR, ".error").text
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-dashboard]")
    assert browser.get_cookies() == []
    screenshot("dashboard-sign-in")


def test_with_the_token_the_charts_draw_and_move_after_a_burst_of_views(
    browser, stack, client, user, screenshot
):
    post = create(client, user, title="Watched from the dashboard")
    browser.get(f"{stack}/admin/dashboard")
    browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-dashboard]"))
    assert browser.current_url == f"{stack}/admin/dashboard"  # no token in any URL
    (cookie,) = browser.get_cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and ADMIN_TOKEN not in cookie["value"]
    assert ADMIN_TOKEN not in browser.page_source
    wait_until(browser, lambda d: polls(d) >= 1, "the dashboard never got its data")
    for name in ("views", "pending", "lag_s"):
        drawn = chart(browser, name)
        assert drawn["points"] >= 1 and drawn["drawn"] > 1000, (name, drawn)

    into_a_safe_part_of_the_minute()
    next_poll(browser)
    before, image = chart(browser, "views"), browser.execute_script(CANVAS, "views")
    send_views(stack, post, BURST)
    next_poll(browser)
    after = chart(browser, "views")
    assert float(after["latest"]) == float(before["latest"]) + BURST, (before, after)
    assert browser.execute_script(CANVAS, "views") != image
    # the worker flushed them: the last flushes table shows the batch
    flushes = '[data-runs="flushes"]'
    wait_until(
        browser,
        lambda d: "no busy flush" not in d.find_element(By.CSS_SELECTOR, flushes).text,
        "no flush in the table",
    )
    next_poll(browser)
    assert screenshot("dashboard").stat().st_size > 10_000

    browser.find_element(By.CSS_SELECTOR, "form button.link").click()  # sign out
    wait_until(browser, lambda d: d.find_elements(By.ID, "token"), "sign-out left the charts")
