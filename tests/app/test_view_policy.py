"""The view policy through the API (COUNTERS_VIEW_POLICY=dedupe, the site's default): the
beacon and ``GET /api/posts/<id>`` count a visitor once per window, crawlers apart and
no author's own views; the ``vid`` cookie; bad input leaves no trace."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from harness.agents import BROWSER
from harness.agents import GOOGLEBOT as GOOGLEBOT_UA
from tests.app.conftest import assert_error, bearer, create, new_user, stored

CHROME = {"User-Agent": BROWSER}
GOOGLEBOT = {"User-Agent": GOOGLEBOT_UA}
YEAR_S = 365 * 24 * 3600


@pytest.fixture
def app(policy_app):
    return policy_app


def counts(client, post: int, kind: str = "posts") -> dict:
    return client.get(f"/api/{kind}/{post}/counts").json


def vid_cookie(response) -> str | None:
    cookies = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("vid=")]
    assert len(cookies) <= 1
    return cookies[0] if cookies else None


def flush(counters) -> None:
    summary = counters.flush_all()
    assert summary.errors == []


def visitor(app, vid: str | None = None):
    """A client of its own (its own cookie jar), with a browser's User-Agent."""
    client = app.test_client()
    if vid is not None:
        client.set_cookie("vid", vid)
    return client


@pytest.mark.parametrize("kind", ["posts", "articles"])
def test_the_beacon_counts_a_visitor_once_per_window_and_sets_its_cookie(
    app, client, user, kind, counters
):
    post = create(client, user, kind)
    browser = visitor(app)
    first = browser.post(f"/api/{kind}/{post}/view", headers=CHROME)
    assert first.status_code == 204 and first.data == b""
    cookie = vid_cookie(first)
    assert cookie is not None
    value = cookie.split(";")[0].removeprefix("vid=")
    assert len(value) >= 22 and all(c.isalnum() or c in "-_" for c in value)
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    assert attributes["max-age"] == f"Max-Age={YEAR_S}"
    assert attributes["samesite"] == "SameSite=Lax"
    assert attributes["path"] == "Path=/"
    assert "httponly" in attributes
    for _ in range(2):  # now with the cookie: the same visitor, inside the window
        again = browser.post(f"/api/{kind}/{post}/view", headers=CHROME)
        assert again.status_code == 204 and vid_cookie(again) is None
    assert counts(client, post, kind)["view_count"] == 1
    assert counts(client, post, kind)["unique_viewers"] == 1
    visitor(app).post(f"/api/{kind}/{post}/view", headers={"User-Agent": "Firefox/1"})
    assert counts(client, post, kind)["view_count"] == 2
    assert counters.report()["held_back"] == {f"{kind}.view_count": {"deduped": 2}}


def test_get_of_a_post_counts_under_the_policy_and_its_counts_include_the_view(app, client, user):
    post = create(client, user)
    reader = visitor(app, "r" * 22)
    for _ in range(3):
        body = reader.get(f"/api/posts/{post}", headers=CHROME).json
        assert body["counts"]["view_count"] == 1
        assert body["counts"]["unique_viewers"] == 1
    bot = visitor(app).get(f"/api/posts/{post}", headers=GOOGLEBOT).json
    assert bot["counts"]["view_count"] == 1 and bot["counts"]["bot_view_count"] == 1
    own = client.get(f"/api/posts/{post}", headers={**CHROME, **bearer(user)}).json
    assert own["counts"] == counts(client, post)
    assert own["counts"]["view_count"] == 1


def test_a_thousand_visitors_crawlers_and_the_author(app, client, user, counters, sql):
    post = create(client, user)
    for i in range(1000):
        browser = visitor(app, f"visitor-{i:06d}-padding-xyz")
        for _ in range(3):
            assert browser.post(f"/api/posts/{post}/view", headers=CHROME).status_code == 204
    crawler = visitor(app)
    for _ in range(200):
        assert crawler.post(f"/api/posts/{post}/view", headers=GOOGLEBOT).status_code == 204
    for _ in range(5):
        mine = client.post(f"/api/posts/{post}/view", headers={**CHROME, **bearer(user)})
        assert mine.status_code == 204
    live = counts(client, post)
    assert live["view_count"] == 1000 and live["bot_view_count"] == 200
    assert abs(live["unique_viewers"] - 1000) <= 10  # within 1%
    flush(counters)
    assert stored(sql, "posts", "view_count", post) == 1000
    assert stored(sql, "posts", "bot_view_count", post) == 200
    assert stored(sql, "posts", "unique_viewers", post) == live["unique_viewers"]
    assert counters.report()["held_back"]["posts.view_count"] == {
        "deduped": 2000,
        "bot": 200,
        "self": 5,
    }
    metrics = client.get("/metrics").text
    assert 'counter_views_held_back_total{counter="posts.view_count",reason="self"} 5.0' in metrics


def test_another_signed_in_users_views_count_once(app, client, user):
    post = create(client, user)
    reader = new_user(client, "reader")
    for _ in range(3):
        response = client.post(f"/api/posts/{post}/view", headers={**CHROME, **bearer(reader)})
        assert response.status_code == 204
    assert counts(client, post)["view_count"] == 1


def test_behind_a_proxy_the_address_comes_from_the_trusted_hop_only(make_app, client, user):
    from tests.app.conftest import fresh

    for hops, expected in ((0, 1), (1, 2)):  # one scope: only the first app starts afresh
        app = make_app(COUNTERS_VIEW_POLICY="dedupe", PROXY_HOPS=hops)
        app = fresh(app) if hops == 0 else app
        api = app.test_client()
        post = create(api, new_user(api, f"author{hops}"))
        for address in ("203.0.113.7", "198.51.100.9"):  # no cookies: the address decides
            client = app.test_client(use_cookies=False)
            headers = {**CHROME, "X-Forwarded-For": address}
            assert client.post(f"/api/posts/{post}/view", headers=headers).status_code == 204
        assert counts(api, post)["view_count"] == expected


def test_bad_input_leaves_no_trace(app, client, user, unchanged):
    post = create(client, user)
    with unchanged():
        for path in ("/api/posts/999999/view", "/api/posts/0/view", "/api/posts/x/view"):
            response = visitor(app).post(path, headers=CHROME)
            assert_error(response, 404, "not_found")
            assert vid_cookie(response) is None
        response = visitor(app).get("/api/posts/999999", headers=CHROME)
        assert_error(response, 404) and vid_cookie(response) is None
        bad = {**CHROME, **bearer("not-a-token")}
        for method in ("post", "get"):
            url = f"/api/posts/{post}/view" if method == "post" else f"/api/posts/{post}"
            response = getattr(visitor(app), method)(url, headers=bad)
            assert_error(response, 401, "unauthorized")
            assert vid_cookie(response) is None
    assert counts(client, post)["view_count"] == 0


def test_a_malformed_vid_cookie_is_replaced_and_never_trusted(app, client, user):
    post = create(client, user)
    browser = visitor(app, "short")
    response = browser.post(f"/api/posts/{post}/view", headers=CHROME)
    assert response.status_code == 204 and vid_cookie(response) is not None
    assert counts(client, post)["view_count"] == 1


def test_raw_counts_every_view_and_sets_no_cookie(make_app, user):
    from tests.app.conftest import fresh

    app = fresh(make_app(COUNTERS_VIEW_POLICY="raw"))
    client = app.test_client()
    post = create(client, new_user(client, "rawauthor"))
    for headers in (CHROME, CHROME, GOOGLEBOT):
        response = client.post(f"/api/posts/{post}/view", headers=headers)
        assert response.status_code == 204 and vid_cookie(response) is None
    assert counts(client, post)["view_count"] == 3
    assert counts(client, post)["bot_view_count"] == 0


def test_buckets_and_windows_hold_only_the_views_the_policy_counted(app, user, counters, sql):
    client = app.test_client()
    post = create(client, user)
    for _ in range(3):  # three visitors, each viewing twice: three views
        reader = visitor(app)
        for _ in range(2):
            assert reader.post(f"/api/posts/{post}/view", headers=CHROME).status_code == 204
    crawler = visitor(app)
    assert crawler.post(f"/api/posts/{post}/view", headers=GOOGLEBOT).status_code == 204
    own = visitor(app)  # the author's own view
    headers = {**CHROME, **bearer(user)}
    assert own.post(f"/api/posts/{post}/view", headers=headers).status_code == 204
    stats = client.get(f"/api/posts/{post}/stats?window=24h").json
    assert stats["views"] == 3
    trending = client.get("/api/posts/trending").json["items"]
    assert [(i["id"], i["window_views"]) for i in trending] == [(post, 3)]
    flush(counters)
    assert stored(sql, "posts", "view_count", post) == 3
    assert client.get(f"/api/posts/{post}/stats?window=24h").json == stats
    with sql.connect() as conn:
        buckets = conn.execute(
            sa.text("SELECT sum(n) FROM counter_hourly WHERE tbl = 'posts' AND row_id = :id"),
            {"id": post},
        ).scalar_one()
    assert buckets == 3
