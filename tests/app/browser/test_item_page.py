"""A post's page in headless Chromium: its view is counted by the page's beacon, once,
when the page is visible; nothing else that fetches the page or the view URL counts."""

from __future__ import annotations

import urllib.error
import urllib.request

from selenium.webdriver.common.by import By

from harness.browser import CHROMEDRIVER, CHROMIUM, WINDOW, package_version
from tests.app.conftest import bearer, create, new_user, stored

from .conftest import wait_until

BODY = (
    "Counters on a busy site are written far more often than they are read, so each "
    "view goes to Redis first and reaches Postgres in batches.\n\n"
    "This page's view was counted by a beacon the page sent once it was visible: the GET "
    "that served it counted nothing.\n"
    "A line break stays a line break; <b>markup</b> stays text."
)


def views(client, post: int) -> int:
    return client.get(f"/api/posts/{post}/counts").json["view_count"]


def beacon_state(browser) -> str:
    return browser.find_element(By.CSS_SELECTOR, "[data-view-url]").get_attribute("data-beacon")


def shown_views(browser) -> str:
    return browser.find_element(By.CSS_SELECTOR, '.counts [data-count="view_count"]').text


def open_and_wait_for_count(browser, url: str) -> None:
    browser.get(url)
    wait_until(browser, lambda d: beacon_state(d) == "shown", "the view count was not updated")


def fetch(url: str, method: str = "GET"):
    """(status, content type, body) of a plain HTTP request, as a crawler would send it."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get_content_type(), exc.read()


def test_the_browser_is_debians_chromium_and_selenium_manager_never_ran(chromium_driver):
    # harness.browser.chromium refuses a driver that Selenium Manager found
    caps = chromium_driver.capabilities
    assert caps["browserVersion"] == package_version(CHROMIUM)
    assert caps["chrome"]["chromedriverVersion"].split()[0] == package_version(CHROMEDRIVER)
    assert chromium_driver.service.path == str(CHROMEDRIVER)


def test_a_post_page_counts_one_view_by_its_beacon_and_shows_it_without_a_reload(
    browser, site, client, user, counters, sql
):
    post = create(client, user, title="A page counted by its beacon")
    assert views(client, post) == 0
    browser.get(f"{site.url}/posts/{post}")
    browser.execute_script("window.sameLoad = true")  # gone if the page reloads
    wait_until(browser, lambda d: beacon_state(d) == "shown", "the view count was not updated")
    assert shown_views(browser) == "1"
    assert browser.execute_script("return window.sameLoad") is True
    assert views(client, post) == 1
    (beacon,) = site.requests("POST", f"/api/posts/{post}/view")
    assert beacon.status == 204 and "Authorization" not in beacon.headers
    assert [s.status for s in site.requests("GET", f"/posts/{post}")] == [200]
    counters.flush_all()
    assert stored(sql, "posts", "view_count", post) == 1
    assert views(client, post) == 1


def test_a_get_or_head_of_the_page_counts_nothing(site, client, user):
    post = create(client, user)
    status, mimetype, body = fetch(f"{site.url}/posts/{post}")
    assert (status, mimetype) == (200, "text/html") and b"Hello" in body
    status, mimetype, body = fetch(f"{site.url}/posts/{post}", "HEAD")
    assert (status, mimetype, body) == (200, "text/html", b"")
    assert [s.method for s in site.seen] == ["GET", "HEAD"]
    assert views(client, post) == 0


def test_a_prefetch_of_the_page_from_another_page_counts_nothing(browser, site, client, user):
    post = create(client, user)
    site.pages["/elsewhere"] = (
        f'<!doctype html><title>elsewhere</title><link rel="prefetch" href="/posts/{post}">'
    )
    browser.get(f"{site.url}/elsewhere")
    (prefetch,) = site.wait_for("GET", f"/posts/{post}")
    assert prefetch.status == 200
    assert "prefetch" in prefetch.headers.get("Sec-Purpose", "")
    assert site.requests("POST", f"/api/posts/{post}/view") == []
    assert views(client, post) == 0


def test_an_image_pointing_at_the_view_url_counts_nothing(browser, site, client, user):
    post = create(client, user)
    site.pages["/embed"] = (
        f'<!doctype html><title>embed</title><img id="probe" src="/api/posts/{post}/view">'
    )
    browser.get(f"{site.url}/embed")
    wait_until(browser, lambda d: d.execute_script("return probe.complete"), "image not done")
    (img,) = site.requests("GET", f"/api/posts/{post}/view")
    assert img.status == 405
    assert views(client, post) == 0


def test_a_page_opened_hidden_counts_only_once_it_is_visible_and_only_once(
    browser, site, client, user
):
    post = create(client, user)
    browser.minimize_window()  # the page loads hidden, as in a background tab
    browser.get(f"{site.url}/posts/{post}")
    wait_until(browser, lambda d: beacon_state(d) == "hidden", "the page's script did not run")
    assert browser.execute_script("return document.visibilityState") == "hidden"
    assert site.requests("POST", f"/api/posts/{post}/view") == []
    assert views(client, post) == 0

    browser.set_window_rect(width=WINDOW[0], height=WINDOW[1])  # shown: visibilitychange
    wait_until(browser, lambda d: beacon_state(d) == "shown", "no view after becoming visible")
    assert views(client, post) == 1
    assert shown_views(browser) == "1"

    browser.minimize_window()  # hidden and visible again: still the same page load
    browser.set_window_rect(width=WINDOW[0], height=WINDOW[1])
    wait_until(browser, lambda d: d.execute_script("return document.visibilityState") == "visible")
    entry = browser.find_element(By.CSS_SELECTOR, "[data-view-url]")
    assert entry.get_attribute("data-beacons-sent") == "1"
    assert len(site.requests("POST", f"/api/posts/{post}/view")) == 1


def test_signing_in_stores_the_token_and_the_beacon_carries_it(browser, site, client, user):
    post = create(client, user)
    reader = new_user(client, "reader")
    browser.get(f"{site.url}/")
    browser.find_element(By.ID, "token").send_keys(reader)
    browser.find_element(By.CSS_SELECTOR, "[data-sign-in-form] button").click()
    stored_token = "return localStorage.getItem('counters.token')"
    wait_until(browser, lambda d: d.execute_script(stored_token) == reader, "token not stored")
    assert browser.find_element(By.CSS_SELECTOR, ".auth-state").is_displayed()

    open_and_wait_for_count(browser, f"{site.url}/posts/{post}")
    (signed,) = site.requests("POST", f"/api/posts/{post}/view")
    assert signed.headers["Authorization"] == bearer(reader)["Authorization"]
    assert signed.status == 204

    browser.find_element(By.CSS_SELECTOR, ".auth-state [data-sign-out]").click()
    assert browser.execute_script(stored_token) is None
    assert not browser.find_element(By.CSS_SELECTOR, ".auth-state").is_displayed()
    open_and_wait_for_count(browser, f"{site.url}/posts/{post}")  # a new page load
    _, anonymous = site.wait_for("POST", f"/api/posts/{post}/view", n=2)
    assert "Authorization" not in anonymous.headers
    assert views(client, post) == 2


def test_unknown_ids_get_a_friendly_html_404_and_the_api_stays_json(browser, site, screenshot):
    for path in ("/posts/999999", "/posts/0"):
        status, mimetype, body = fetch(site.url + path)
        assert (status, mimetype) == (404, "text/html"), path
        assert b'href="/"' in body and b"Traceback" not in body
    status, mimetype, body = fetch(f"{site.url}/api/posts/999999")
    assert (status, mimetype) == (404, "application/json")

    browser.get(f"{site.url}/posts/999999")
    assert browser.find_element(By.TAG_NAME, "h1").text == "No such post"
    home = browser.find_element(By.CSS_SELECTOR, ".error-page a")
    assert home.get_attribute("href") == f"{site.url}/"
    screenshot("not-found")
    browser.get(f"{site.url}/posts/0")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Not Found"


def test_screenshots_of_the_home_and_post_pages(browser, site, client, user, screenshot):
    bob = new_user(client, "bob")
    titles = [
        "Write-behind counters, explained",
        "Why a flush is one transaction",
        "Exactly once, even when a worker dies",
    ]
    posts = [create(client, user, title=t) for t in titles]
    create(client, bob, "articles", "Sharding a Redis hash by id")
    create(client, bob, "articles", "Reconciling drift without double counting")
    post = client.post(
        "/api/posts",
        json={"title": "What a page view is worth", "content": BODY},
        headers=bearer(bob),
    ).json["id"]
    for target in posts[:2]:
        client.post(f"/api/posts/{target}/view")
    client.post(
        "/api/actions",
        json={"action_type": "like", "target_type": "post", "target_id": post},
        headers=bearer(user),
    )

    browser.get(f"{site.url}/")
    overflow = "return document.documentElement.scrollWidth > window.innerWidth"
    assert browser.execute_script(overflow) is False
    assert len(browser.find_elements(By.CSS_SELECTOR, ".item")) == 6
    assert screenshot("home").stat().st_size > 10_000

    open_and_wait_for_count(browser, f"{site.url}/posts/{post}")
    assert browser.execute_script(overflow) is False
    assert browser.find_elements(By.CSS_SELECTOR, ".body b") == []
    assert "<b>markup</b>" in browser.find_element(By.CSS_SELECTOR, ".body").text
    assert screenshot("post-page").stat().st_size > 10_000
