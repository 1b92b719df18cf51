"""The six endpoints shared by /api/posts and /api/articles."""

from datetime import datetime

import pytest

from app.routes import content as content_routes
from tests.app.conftest import (
    ADMIN_TOKEN,
    assert_error,
    bearer,
    comment,
    create,
    new_user,
    row_counts,
    stored,
)

KINDS = ["posts", "articles"]
ZERO = {
    "view_count": 0,
    "likes_count": 0,
    "collects_count": 0,
    "shares_count": 0,
    "comments_count": 0,
    "bot_view_count": 0,
    "unique_viewers": 0,
}


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


def test_create_returns_the_item_with_zero_counts(client, user, kind):
    response = client.post(
        f"/api/{kind}", json={"title": "Hi", "content": "there"}, headers=bearer(user)
    )
    assert response.status_code == 201
    body = response.json
    assert set(body) == {"id", "title", "content", "author_id", "created_at", "counts"}
    assert (body["title"], body["content"], body["author_id"]) == ("Hi", "there", 1)
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert body["counts"] == ZERO


def test_create_needs_a_user(client, kind, unchanged):
    with unchanged():
        response = client.post(f"/api/{kind}", json={"title": "t", "content": "c"})
        assert_error(response, 401)


@pytest.mark.parametrize(
    "body",
    [
        {"title": "", "content": "c"},
        {"title": "   ", "content": "c"},
        {"title": "x" * 201, "content": "c"},
        {"title": 5, "content": "c"},
        {"title": None, "content": "c"},
        {"content": "c"},
        {"title": "t"},
        {"title": "t", "content": 7},
        {"title": "t", "content": ["c"]},
        {"title": "nul\x00", "content": "c"},
        {"title": "t", "content": "nul\x00"},
    ],
)
def test_invalid_item_is_400(client, user, kind, unchanged, body):
    with unchanged():
        assert_error(client.post(f"/api/{kind}", json=body, headers=bearer(user)), 400)


def test_lone_surrogate_is_400(client, user, kind, unchanged):
    with unchanged():
        raw = '{"title": "\\ud800", "content": "c"}'
        response = client.post(
            f"/api/{kind}", data=raw, content_type="application/json", headers=bearer(user)
        )
        assert_error(response, 400)


def test_title_of_200_chars_is_accepted(client, user, kind):
    response = client.post(
        f"/api/{kind}", json={"title": "x" * 200, "content": ""}, headers=bearer(user)
    )
    assert response.status_code == 201


def test_bad_json_is_400(client, user, kind, unchanged):
    with unchanged():
        response = client.post(
            f"/api/{kind}", data="{nope", content_type="application/json", headers=bearer(user)
        )
        assert_error(response, 400, "invalid_json")


def test_body_over_one_mib_is_413(client, user, kind, unchanged):
    post_id = create(client, user, kind)
    big = b'{"title": "t", "content": "' + b"x" * (1024 * 1024) + b'"}'
    with unchanged():
        response = client.post(
            f"/api/{kind}", data=big, content_type="application/json", headers=bearer(user)
        )
        assert_error(response, 413)
        assert_error(client.post(f"/api/{kind}/{post_id}/view", data=big), 413)


def test_get_counts_one_view_and_returns_it(client, user, kind, sql):
    item = create(client, user, kind)
    first = client.get(f"/api/{kind}/{item}")
    assert first.status_code == 200
    assert first.json["counts"]["view_count"] == 1
    assert first.json["title"] == "Hello"
    assert client.get(f"/api/{kind}/{item}").json["counts"]["view_count"] == 2
    assert stored(sql, kind, "view_count", item) == 0  # not flushed yet


def test_head_counts_no_view(client, user, kind):
    item = create(client, user, kind)
    assert client.head(f"/api/{kind}/{item}").status_code == 200
    assert client.head(f"/api/{kind}/999").status_code == 404
    assert client.get(f"/api/{kind}/{item}/counts").json["view_count"] == 0


def test_view_beacon_is_204_and_counts_live(client, user, kind, sql):
    item = create(client, user, kind)
    for _ in range(3):
        response = client.post(f"/api/{kind}/{item}/view")
        assert response.status_code == 204 and response.data == b""
    counts = client.get(f"/api/{kind}/{item}/counts")
    assert counts.status_code == 200
    assert counts.json == {**ZERO, "view_count": 3}
    assert client.get(f"/api/{kind}/{item}/counts").json["view_count"] == 3  # no view counted
    assert stored(sql, kind, "view_count", item) == 0


def test_list_is_newest_first_with_keyset_pages_and_live_counts(client, user, kind):
    ids = [create(client, user, kind, title=f"t{i}") for i in range(5)]
    client.post(f"/api/{kind}/{ids[-1]}/view")
    page = client.get(f"/api/{kind}?limit=2")
    assert page.status_code == 200
    assert [i["id"] for i in page.json["items"]] == [ids[4], ids[3]]
    assert page.json["items"][0]["counts"]["view_count"] == 1
    assert page.json["next"] == ids[3]
    page = client.get(f"/api/{kind}?limit=2&after={ids[3]}")
    assert [i["id"] for i in page.json["items"]] == [ids[2], ids[1]]
    page = client.get(f"/api/{kind}?limit=2&after={page.json['next']}")
    assert [i["id"] for i in page.json["items"]] == [ids[0]]
    assert page.json["next"] is None
    everything = client.get(f"/api/{kind}").json
    assert len(everything["items"]) == 5 and everything["next"] is None
    assert set(everything["items"][0]) == {
        "id",
        "title",
        "content",
        "author_id",
        "created_at",
        "counts",
    }


def test_list_when_empty(client, kind):
    assert client.get(f"/api/{kind}").json == {"items": [], "next": None}


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=",
        "after=0",
        "after=abc",
        "after=-3",
        "after=9223372036854775808",
        "limit=１",
    ],
)
def test_list_with_bad_paging_is_400(client, kind, query):
    assert_error(client.get(f"/api/{kind}?{query}"), 400)


def test_delete_by_author_is_204_then_everything_404s(client, user, kind, r):
    item = create(client, user, kind)
    client.post(f"/api/{kind}/{item}/view")
    assert client.delete(f"/api/{kind}/{item}", headers=bearer(user)).status_code == 204
    assert_error(client.post(f"/api/{kind}/{item}/view"), 404, "not_found")
    assert_error(client.get(f"/api/{kind}/{item}"), 404)
    assert_error(client.get(f"/api/{kind}/{item}/counts"), 404)
    assert_error(client.delete(f"/api/{kind}/{item}", headers=bearer(user)), 404)


def test_an_edit_shows_on_the_next_page_at_once(client, user, kind):
    item = create(client, user, kind)
    for _ in range(2):  # the second page comes from the read model
        assert client.get(f"/api/{kind}/{item}").json["title"] == "Hello"
    response = client.patch(
        f"/api/{kind}/{item}", json={"title": "Edited", "content": "new"}, headers=bearer(user)
    )
    assert response.status_code == 200
    assert response.json["title"] == "Edited" and response.json["content"] == "new"
    assert response.json["counts"]["view_count"] == 2  # the edit counts no view
    page = client.get(f"/api/{kind}/{item}").json
    assert (page["title"], page["content"], page["counts"]["view_count"]) == ("Edited", "new", 3)
    assert "<h1>Edited</h1>" in client.get(f"/{kind}/{item}").get_data(as_text=True)
    only_title = client.patch(f"/api/{kind}/{item}", json={"title": "Again"}, headers=bearer(user))
    assert (only_title.json["title"], only_title.json["content"]) == ("Again", "new")


@pytest.mark.parametrize(
    "body",
    [{}, {"title": ""}, {"title": " "}, {"content": 5}, {"title": "ok", "author_id": 2}, []],
)
def test_an_invalid_edit_is_400_and_changes_nothing(client, user, kind, unchanged, body):
    item = create(client, user, kind)
    client.get(f"/api/{kind}/{item}")
    with unchanged():
        assert_error(client.patch(f"/api/{kind}/{item}", json=body, headers=bearer(user)), 400)
    assert client.get(f"/api/{kind}/{item}").json["title"] == "Hello"


def test_an_edit_by_another_user_or_nobody_or_of_nothing_changes_nothing(
    client, user, other, kind, unchanged
):
    item = create(client, user, kind)
    client.get(f"/api/{kind}/{item}")
    edit = {"title": "Mine"}
    with unchanged():
        assert_error(client.patch(f"/api/{kind}/{item}", json=edit, headers=bearer(other)), 403)
        assert_error(client.patch(f"/api/{kind}/{item}", json=edit), 401)
        assert_error(
            client.patch(f"/api/{kind}/{item + 1000}", json=edit, headers=bearer(user)), 404
        )
    assert client.get(f"/api/{kind}/{item}").json["title"] == "Hello"


def test_delete_by_another_user_is_403(client, user, other, kind, sql):
    item = create(client, user, kind)
    assert_error(client.delete(f"/api/{kind}/{item}", headers=bearer(other)), 403, "forbidden")
    assert client.get(f"/api/{kind}/{item}/counts").status_code == 200


def test_delete_needs_a_user(client, user, kind):
    item = create(client, user, kind)
    assert_error(client.delete(f"/api/{kind}/{item}"), 401)
    assert_error(client.delete(f"/api/{kind}/{item}", headers=bearer("x")), 401)


def test_delete_removes_actions_and_comments(client, user, other, sql):
    post = create(client, user)
    pc = comment(client, other, "posts", post)
    client.post(
        "/api/actions",
        json={"action_type": "like", "target_type": "post", "target_id": post},
        headers=bearer(other),
    )
    client.post(
        "/api/actions",
        json={"action_type": "like", "target_type": "post_comment", "target_id": pc},
        headers=bearer(user),
    )
    assert client.delete(f"/api/posts/{post}", headers=bearer(user)).status_code == 204
    counts = row_counts(sql)
    assert counts["posts"] == counts["post_comments"] == counts["user_actions"] == 0
    assert counts["post_comment_likes"] == 0


def test_comment_is_201_and_bumps_comments_count(client, user, other, kind, sql):
    item = create(client, user, kind)
    response = client.post(
        f"/api/{kind}/{item}/comments", json={"content": "nice"}, headers=bearer(other)
    )
    assert response.status_code == 201
    parent = "post_id" if kind == "posts" else "article_id"
    body = response.json
    assert set(body) == {"id", parent, "author_id", "content", "created_at", "likes_count"}
    assert (body[parent], body["author_id"], body["content"]) == (item, 2, "nice")
    comment(client, user, kind, item)
    assert client.get(f"/api/{kind}/{item}/counts").json["comments_count"] == 2
    assert stored(sql, kind, "comments_count", item) == 0
    table = "post_comments" if kind == "posts" else "comments"
    assert row_counts(sql)[table] == 2


def test_comment_on_unknown_item_is_404(client, user, kind, unchanged):
    with unchanged():
        response = client.post(
            f"/api/{kind}/99/comments", json={"content": "x"}, headers=bearer(user)
        )
        assert_error(response, 404)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"content": ""},
        {"content": " "},
        {"content": 3},
        {"content": "x" * 10_001},
        {"content": "\x00"},
    ],
)
def test_invalid_comment_is_400(client, user, kind, unchanged, body):
    item = create(client, user, kind)
    with unchanged():
        response = client.post(f"/api/{kind}/{item}/comments", json=body, headers=bearer(user))
        assert_error(response, 400)


def test_comment_needs_a_user(client, user, kind, unchanged):
    item = create(client, user, kind)
    with unchanged():
        assert_error(client.post(f"/api/{kind}/{item}/comments", json={"content": "x"}), 401)


BAD_IDS = [
    "0",
    "-1",
    "9223372036854775808",
    "99999999999999999999",
    "abc",
    "1.5",
    "1e3",
    "%20",
    "０",
    "99",
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_or_unknown_ids_are_404(client, user, kind, bad, unchanged):
    create(client, user, kind)
    token = bearer(new_user(client, "carol"))
    with unchanged():
        assert_error(client.get(f"/api/{kind}/{bad}"), 404)
        assert_error(client.post(f"/api/{kind}/{bad}/view"), 404)
        assert_error(client.get(f"/api/{kind}/{bad}/counts"), 404)
        assert_error(client.delete(f"/api/{kind}/{bad}", headers=token), 404)
        response = client.post(f"/api/{kind}/{bad}/comments", json={"content": "x"}, headers=token)
        assert_error(response, 404)


def test_largest_bigint_id_is_a_plain_404(client, kind, unchanged):
    with unchanged():
        assert_error(client.post(f"/api/{kind}/9223372036854775807/view"), 404)
        assert_error(client.get(f"/api/{kind}/9223372036854775807"), 404)


def test_wrong_method_is_405_json(client, user, kind):
    item = create(client, user, kind)
    response = client.put(f"/api/{kind}/{item}", json={})
    assert "PATCH" in response.headers["Allow"]
    assert_error(response, 405, "method_not_allowed")
    assert "DELETE" in response.headers["Allow"]
    assert_error(client.get(f"/api/{kind}/{item}/view"), 405)


NESTED = "[" * 100_000 + "]" * 100_000  # far deeper than any JSON parser recurses


@pytest.mark.parametrize(
    ("path", "auth"),
    [
        ("/api/users", None),
        ("/api/posts", "user"),
        ("/api/articles", "user"),
        ("/api/actions", "user"),
        ("/api/posts/1/comments", "user"),
        ("/api/admin/counters/schedule", "admin"),
    ],
)
def test_pathologically_nested_json_is_a_400_everywhere(client, user, unchanged, path, auth):
    create(client, user)
    headers = {"user": bearer(user), "admin": bearer(ADMIN_TOKEN), None: {}}[auth]
    method = client.put if path.endswith("/schedule") else client.post
    with unchanged():
        response = method(path, data=NESTED, content_type="application/json", headers=headers)
        assert response.status_code == 400, response.data[:200]
        assert set(response.json) == {"error", "message"}


def test_a_list_page_stays_bounded_in_bytes(client, user, kind, monkeypatch):
    monkeypatch.setattr(content_routes, "PAGE_MAX_TEXT_BYTES", 25_000)
    big = "y" * 10_000
    ids = [
        client.post(
            f"/api/{kind}", json={"title": f"t{i}", "content": big}, headers=bearer(user)
        ).json["id"]
        for i in range(5)
    ]
    page = client.get(f"/api/{kind}?limit=100").json
    assert [p["id"] for p in page["items"]] == ids[::-1][:2]  # 3 would pass 25,000 bytes
    assert page["next"] == ids[3]
    rest = client.get(f"/api/{kind}?limit=100&after={page['next']}").json
    assert [p["id"] for p in rest["items"]] == ids[2::-1][:2] and rest["next"] == ids[1]
    huge = "z" * 30_000  # one item over the budget still comes, alone
    client.post(f"/api/{kind}", json={"title": "huge", "content": huge}, headers=bearer(user))
    assert len(client.get(f"/api/{kind}?limit=100").json["items"]) == 1
