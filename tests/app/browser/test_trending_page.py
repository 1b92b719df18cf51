"""/trending in headless Chromium: ordered as GET /api/<kind>/trending, a 24h / 7d switch
that swaps the list, reached from the home page; a post page's 7-day sparkline."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from tests.app.conftest import ADMIN_TOKEN, bearer, create

from .conftest import wait_until


def view(client, kind: str, row_id: int, n: int) -> None:
    for _ in range(n):
        assert client.post(f"/api/{kind}/{row_id}/view").status_code == 204


def listed(browser, kind: str) -> list[tuple[int, int]]:
    items = browser.find_elements(By.CSS_SELECTOR, f'.item[data-kind="{kind}"]')
    return [
        (int(i.get_attribute("data-id")), int(i.get_attribute("data-window-views"))) for i in items
    ]


def api_order(client, kind: str, window: str) -> list[tuple[int, int]]:
    body = client.get(f"/api/{kind}/trending?window={window}").json
    return [(i["id"], i["window_views"]) for i in body["items"]]


def test_trending_page_orders_as_the_api_and_switches_windows(
    browser, site, client, user, screenshot
):
    posts = [create(client, user, "posts", title=f"Post {t}") for t in "ABCDE"]
    article = create(client, user, "articles", title="An article")
    for post, n in zip(posts, (3, 9, 1, 6, 0), strict=True):
        view(client, "posts", post, n)
    view(client, "articles", article, 2)
    client.post("/api/admin/counters/flush", headers=bearer(ADMIN_TOKEN))
    view(client, "posts", posts[2], 7)  # pending only, and now second
    browser.get(f"{site.url}/")
    browser.find_element(By.LINK_TEXT, "Trending now").click()
    wait_until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-trending]"))
    assert (
        browser.find_element(By.CSS_SELECTOR, "[data-trending]").get_attribute("data-trending")
        == "24h"
    )
    expected = api_order(client, "posts", "24h")
    assert [i for i, _ in expected] == [posts[1], posts[2], posts[3], posts[0]]
    assert listed(browser, "posts") == expected
    assert listed(browser, "articles") == api_order(client, "articles", "24h") == [(article, 2)]
    screenshot("trending-24h")
    current = browser.find_element(By.CSS_SELECTOR, ".switch [aria-current]")
    assert current.get_attribute("data-window") == "24h"

    view(client, "posts", posts[0], 10)  # now first, in both windows
    browser.find_element(By.CSS_SELECTOR, '.switch [data-window="7d"]').click()
    wait_until(
        browser,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, "[data-trending]").get_attribute("data-trending")
            == "7d"
        ),
        "the switch did not load the 7d list",
    )
    expected = api_order(client, "posts", "7d")
    assert expected[0] == (posts[0], 13)
    assert listed(browser, "posts") == expected
    assert browser.find_element(By.CSS_SELECTOR, ".switch [aria-current]").text == "7d"
    screenshot("trending-7d")


def test_a_post_page_shows_a_sparkline_of_its_last_seven_days(
    browser, site, client, user, screenshot
):
    post = create(client, user, "posts", title="A post with a sparkline")
    view(client, "posts", post, 4)
    client.post("/api/admin/counters/flush", headers=bearer(ADMIN_TOKEN))
    view(client, "posts", post, 2)
    browser.get(f"{site.url}/posts/{post}")
    figure = wait_until(
        browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-sparkline][data-state="drawn"]')
    )
    # the page's own beacon may add its view before the series is fetched
    assert int(figure.get_attribute("data-total")) in (6, 7)
    line = figure.find_element(By.CSS_SELECTOR, "polyline")
    points = line.get_attribute("points").split()
    assert len(points) == 168
    assert line.size["width"] > 100 and line.size["height"] > 0  # drawn, not empty
    assert "7 days" in figure.text
    screenshot("post-sparkline")
