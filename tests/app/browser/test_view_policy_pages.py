"""The view policy as a person's browser meets it (COUNTERS_VIEW_POLICY=dedupe): a reload
inside the window counts nothing, nor does the author reading their own post, a crawler
counts apart, and the page sets the ``vid`` cookie before its beacon goes out."""

from __future__ import annotations

import time

import pytest
from selenium.webdriver.common.by import By

from harness.agents import GOOGLEBOT
from tests.app.conftest import create

from .conftest import wait_until
from .test_item_page import beacon_state, open_and_wait_for_count, shown_views

YEAR_S = 365 * 24 * 3600


@pytest.fixture
def app(policy_app):
    return policy_app


def counts(client, post: int) -> dict:
    return client.get(f"/api/posts/{post}/counts").json


def held(counters) -> dict:
    return counters.report()["held_back"].get("posts.view_count", {})


def wait_for_beacon_answer(browser, state: str) -> None:
    wait_until(browser, lambda d: beacon_state(d) == state, f"the page never said {state!r}")


def test_a_reload_inside_the_window_keeps_the_view_count(
    browser, site, client, user, counters, screenshot
):
    post = create(client, user, title="Counted once per visitor and window")
    open_and_wait_for_count(browser, f"{site.url}/posts/{post}")
    assert shown_views(browser) == "1"
    browser.refresh()
    site.wait_for("POST", f"/api/posts/{post}/view", n=2)
    wait_for_beacon_answer(browser, "unchanged")  # the page polled, nothing moved
    assert shown_views(browser) == "1"
    assert counts(client, post)["view_count"] == 1
    assert counts(client, post)["unique_viewers"] == 1
    assert held(counters) == {"deduped": 1}
    readers = browser.find_element(By.CSS_SELECTOR, '.counts [data-count="unique_viewers"]')
    assert readers.text == "1"
    assert screenshot("post-page-policy").stat().st_size > 10_000


def test_the_author_signed_in_with_the_pages_form_does_not_count(
    browser, site, client, user, counters
):
    post = create(client, user, title="My own post")
    browser.get(f"{site.url}/")
    browser.find_element(By.ID, "token").send_keys(user)
    browser.find_element(By.CSS_SELECTOR, "[data-sign-in-form] button").click()
    wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".auth-state").is_displayed())
    browser.get(f"{site.url}/posts/{post}")
    (beacon,) = site.wait_for("POST", f"/api/posts/{post}/view")
    assert beacon.status == 204 and beacon.headers["Authorization"] == f"Bearer {user}"
    wait_for_beacon_answer(browser, "unchanged")
    assert shown_views(browser) == "0"
    assert counts(client, post)["view_count"] == 0
    assert held(counters) == {"self": 1}


def test_a_crawler_counts_into_bot_view_count_only(browser, site, client, user, counters):
    post = create(client, user)
    browser.execute_cdp_cmd("Network.setUserAgentOverride", {"userAgent": GOOGLEBOT})
    try:
        browser.get(f"{site.url}/posts/{post}")
        (beacon,) = site.wait_for("POST", f"/api/posts/{post}/view")
        assert beacon.headers["User-Agent"] == GOOGLEBOT and beacon.status == 204
        wait_for_beacon_answer(browser, "unchanged")
    finally:
        browser.execute_cdp_cmd("Network.setUserAgentOverride", {"userAgent": ""})
    assert counts(client, post)["view_count"] == 0
    assert counts(client, post)["bot_view_count"] == 1
    assert held(counters) == {"bot": 1}


def test_the_first_visit_sets_the_vid_cookie_before_the_beacon(browser, site, client, user):
    post = create(client, user)
    assert browser.get_cookies() == []
    open_and_wait_for_count(browser, f"{site.url}/posts/{post}")
    cookie = browser.get_cookie("vid")
    assert cookie is not None
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    assert len(cookie["value"]) >= 22
    assert abs(cookie["expiry"] - (time.time() + YEAR_S)) < 3600
    # HttpOnly: the page's script cannot read it
    assert "vid=" not in browser.execute_script("return document.cookie")
    (page,) = site.requests("GET", f"/posts/{post}")
    assert "Cookie" not in page.headers  # the first visit
    (beacon,) = site.requests("POST", f"/api/posts/{post}/view")
    assert f"vid={cookie['value']}" in beacon.headers["Cookie"]
    assert counts(client, post)["view_count"] == 1
