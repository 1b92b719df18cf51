"""The pages for people: what they show, what they cost, and that they count nothing.
Their beacon runs in a real browser: tests/app/browser/."""

from __future__ import annotations

import pytest

from tests.app.conftest import (
    act,
    assert_error,
    bearer,
    comment,
    create,
    new_user,
    request_costs,
)


def views(client, kind: str, row_id: int) -> int:
    return client.get(f"/api/{kind}/{row_id}/counts").json["view_count"]


def assert_page(response, status: int = 200) -> str:
    assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.mimetype == "text/html"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    return response.get_data(as_text=True)


def test_home_lists_the_newest_posts_and_articles_with_live_counts(client, user):
    first = create(client, user, title="First post")
    newest = create(client, user, title="Newest <post>")
    article = create(client, user, "articles", "An article")
    for _ in range(3):
        client.post(f"/api/posts/{newest}/view")
    act(client, user, "like", "post", newest)
    comment(client, user, "articles", article)

    html = assert_page(client.get("/"))
    assert html.index("Newest &lt;post&gt;") < html.index("First post")
    assert f'href="/posts/{newest}"' in html and f'href="/posts/{first}"' in html
    assert f'href="/articles/{article}"' in html
    assert 'data-count="view_count" data-value="3">3<' in html
    assert 'data-count="likes_count" data-value="1">1<' in html
    assert 'data-count="comments_count" data-value="1">1<' in html
    assert "data-sign-in-form" in html
    assert views(client, "posts", newest) == 3  # the home page counted nothing


def test_home_without_content_says_so(client):
    html = assert_page(client.get("/"))
    assert "No posts yet." in html and "No articles yet." in html


@pytest.mark.parametrize("kind", ["posts", "articles"])
def test_a_page_shows_its_row_and_live_counts_and_counts_no_view(client, user, kind):
    other = new_user(client, "bob")
    body = "First <script>alert(1)</script> paragraph.\n\nSecond,\nwith a break."
    reply = client.post(
        f"/api/{kind}", json={"title": "T & <i>", "content": body}, headers=bearer(user)
    )
    row = reply.json["id"]
    client.post(f"/api/{kind}/{row}/view")
    target = kind[:-1]
    act(client, other, "share", target, row)
    act(client, other, "collect", target, row)

    for _ in range(2):
        html = assert_page(client.get(f"/{kind}/{row}"))
    assert "<h1>T &amp; &lt;i&gt;</h1>" in html
    assert "<p>First &lt;script&gt;alert(1)&lt;/script&gt; paragraph.</p>" in html
    assert "<p>Second,<br>with a break.</p>" in html
    assert "by user #1" in html
    for key, value in [("view_count", 1), ("shares_count", 1), ("collects_count", 1)]:
        assert f'data-count="{key}" data-value="{value}">{value}<' in html
    assert f'data-view-url="/api/{kind}/{row}/view"' in html
    head = client.head(f"/{kind}/{row}")
    assert head.status_code == 200 and head.data == b""
    assert views(client, kind, row) == 1  # two GETs and a HEAD later


@pytest.mark.parametrize("kind", ["posts", "articles"])
def test_a_page_is_one_redis_round_trip_and_no_sql_statement(app, client, user, sql, kind):
    """The row, its stored counts and unflushed deltas in one Redis round trip, from the
    read model; a row not there (voided by an edit here) costs the one statement of the
    live read and one more round trip to fill it (``counters.read_rows``)."""
    row = create(client, user, kind)
    page = f"/{kind}/{row}"
    client.get(page)  # warm: scripts loaded, pools connected, row filled

    def costs() -> tuple[int, int]:
        response, sent, statements = request_costs(sql, lambda: client.get(page))
        assert "<h1>Hello</h1>" in assert_page(response)
        return sent, statements

    assert costs() == (1, 0)
    app.extensions["counters"].counters.changed(kind, [row])
    assert costs() == (2, 1)
    assert costs() == (1, 0)


@pytest.mark.parametrize(
    "path",
    ["/posts/999999", "/articles/999999", "/posts/0", "/posts/-1", "/posts/x", "/nope"],
)
def test_unknown_pages_are_a_friendly_html_404(client, path):
    html = assert_page(client.get(path), 404)
    assert "<h1>" in html and 'href="/"' in html
    assert "Traceback" not in html


def test_a_deleted_post_is_a_404_page(client, user):
    post = create(client, user)
    assert client.delete(f"/api/posts/{post}", headers=bearer(user)).status_code == 204
    assert "No such post" in assert_page(client.get(f"/posts/{post}"), 404)


def test_the_api_keeps_its_json_errors(client):
    assert_error(client.get("/api/posts/999999"), 404, "not_found")
    assert_error(client.get("/api/posts/0"), 404)
    assert_error(client.get("/api"), 404)
    assert_error(client.post("/healthz"), 405)


def test_a_wrong_method_on_a_page_is_an_html_405(client, user):
    post = create(client, user)
    response = client.post(f"/posts/{post}")
    assert_page(response, 405)
    assert "GET" in response.headers["Allow"]


def test_pages_answer_an_html_503_when_redis_is_down(client, user, make_app):
    post = create(client, user)
    client = make_app(REDIS_URL="redis://127.0.0.1:1/15").test_client()  # nothing listens
    for path in (f"/posts/{post}", "/"):
        response = client.get(path)
        assert "Unavailable" in assert_page(response, 503)
        assert response.headers["Retry-After"] == "1"
    assert_error(client.get(f"/api/posts/{post}/counts"), 503, "unavailable")


def test_static_files_are_served(client):
    for path, mimetype in [
        ("/static/site.css", "text/css"),
        ("/static/site.js", "text/javascript"),
    ]:
        with client.get(path) as response:
            assert response.status_code == 200, path
            assert response.mimetype == mimetype
    assert_page(client.get("/static/nope.css"), 404)
