"""Counting through the engine: live reads, flushes, recounts, a lost existence index."""

import pytest
import sqlalchemy as sa

from app.tasks import (
    update_article_comment_likes_count,
    update_article_counts,
    update_post_comment_likes_count,
    update_post_counts,
)
from benchmarks.bench_app import update_post_view_count
from tests.app.conftest import (
    ADMIN_TOKEN,
    PREFIX,
    act,
    assert_error,
    bearer,
    comment,
    create,
    request_costs,
    stored,
)

ADMIN = bearer(ADMIN_TOKEN)


def flush(client) -> dict:
    response = client.post("/api/admin/counters/flush", headers=ADMIN)
    assert response.status_code == 200
    return response.json


def test_views_land_in_postgres_exactly_after_a_flush(client, user, sql):
    post, article = create(client, user, "posts"), create(client, user, "articles")
    for _ in range(5):
        client.post(f"/api/posts/{post}/view")
    client.get(f"/api/posts/{post}")
    client.post(f"/api/articles/{article}/view")
    assert stored(sql, "posts", "view_count", post) == 0
    summary = flush(client)
    assert summary["flushed"] >= 2 and summary["errors"] == []
    assert stored(sql, "posts", "view_count", post) == 6
    assert stored(sql, "articles", "view_count", article) == 1
    # live reads neither lose nor double what the flush applied
    assert client.get(f"/api/posts/{post}/counts").json["view_count"] == 6
    client.post(f"/api/posts/{post}/view")
    assert client.get(f"/api/posts/{post}/counts").json["view_count"] == 7
    assert flush(client)["flushed"] == 1
    assert flush(client)["flushed"] == 0
    assert stored(sql, "posts", "view_count", post) == 7


def test_comments_count_lands_in_postgres(client, user, sql):
    post = create(client, user)
    for _ in range(3):
        comment(client, user, "posts", post)
    flush(client)
    assert stored(sql, "posts", "comments_count", post) == 3


def test_views_of_a_deleted_post_are_dropped_by_the_flush(client, user, sql):
    post, kept = create(client, user), create(client, user)
    client.post(f"/api/posts/{post}/view")
    client.post(f"/api/posts/{kept}/view")
    assert client.delete(f"/api/posts/{post}", headers=bearer(user)).status_code == 204
    assert_error(client.post(f"/api/posts/{post}/view"), 404)
    summary = flush(client)
    assert summary["rows_missing"] == 1 and summary["errors"] == []
    assert stored(sql, "posts", "view_count", kept) == 1


@pytest.mark.parametrize(
    ("method", "path", "status", "sql_statements"),
    [("post", "/view", 204, 0), ("get", "", 200, 0)],
    ids=["beacon", "page"],
)
def test_a_view_is_one_redis_round_trip_and_no_sql_statement(
    app, client, user, sql, method, path, status, sql_statements
):
    """The beacon touches only Redis; so does the page once its row is in the read model
    (engine/readmodel.py): the row, its stored counts and the deltas in one round trip."""
    post = create(client, user)
    url = f"/api/posts/{post}{path}"
    getattr(client, method)(url)  # warm: scripts loaded, pools connected
    response, sent, statements = request_costs(sql, lambda: getattr(client, method)(url))
    assert response.status_code == status
    if status == 200:
        assert response.get_json()["counts"]["view_count"] == 2
        assert response.get_json()["title"]
    assert sent == 1
    assert statements == sql_statements


def drift(sql, table: str, column: str, row_id: int, value: int) -> None:
    with sql.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {table} SET {column} = :v WHERE id = :id"), {"v": value, "id": row_id}
        )


def test_update_post_counts_is_exact_while_deltas_are_pending(client, user, other, sql):
    post = create(client, user)
    act(client, user, "like", "post", post)
    act(client, other, "like", "post", post)
    act(client, other, "collect", "post", post)
    act(client, other, "share", "post", post)
    comment(client, other, "posts", post)
    client.post(f"/api/posts/{post}/view")
    drift(sql, "posts", "likes_count", post, 40)  # as if an old bug had written it
    drift(sql, "posts", "shares_count", post, -3)
    result = update_post_counts.apply(args=[post]).get()
    assert result["fixed"] == 2 and result["checked"] == 4
    expected = {
        "view_count": 1,
        "likes_count": 2,
        "collects_count": 1,
        "shares_count": 1,
        "comments_count": 1,
        "bot_view_count": 0,
        "unique_viewers": 0,
    }
    assert client.get(f"/api/posts/{post}/counts").json == expected
    flush(client)
    for column, value in expected.items():
        assert stored(sql, "posts", column, post) == value


def test_update_article_counts_is_exact_while_deltas_are_pending(client, user, sql):
    article = create(client, user, "articles")
    act(client, user, "like", "article", article)
    comment(client, user, "articles", article)
    drift(sql, "articles", "comments_count", article, 9)
    result = update_article_counts.apply(args=[article]).get()
    assert result["fixed"] == 1
    counts = client.get(f"/api/articles/{article}/counts").json
    assert (counts["likes_count"], counts["comments_count"]) == (1, 1)
    flush(client)
    assert stored(sql, "articles", "comments_count", article) == 1
    assert stored(sql, "articles", "likes_count", article) == 1


@pytest.mark.parametrize(
    ("task", "kind", "target", "table", "path"),
    [
        (
            update_post_comment_likes_count,
            "posts",
            "post_comment",
            "post_comments",
            "post-comments",
        ),
        (update_article_comment_likes_count, "articles", "comment", "comments", "comments"),
    ],
)
def test_comment_likes_recount_is_exact_while_deltas_are_pending(
    client, user, other, sql, task, kind, target, table, path
):
    parent = create(client, user, kind)
    cid = comment(client, user, kind, parent)
    act(client, user, "like", target, cid)
    act(client, other, "like", target, cid)
    drift(sql, table, "likes_count", cid, 7)
    assert task.apply(args=[cid]).get()["fixed"] == 1
    assert client.get(f"/api/{path}/{cid}/counts").json == {"likes_count": 2}
    flush(client)
    assert stored(sql, table, "likes_count", cid) == 2


def test_recount_of_a_missing_row_checks_nothing(app):
    assert update_post_counts.apply(args=[12345]).get()["checked"] == 0


def test_legacy_view_task_updates_the_column_directly(client, user, sql):
    post = create(client, user)
    assert update_post_view_count.apply(args=[post]).get() is True
    assert update_post_view_count.apply(args=[999]).get() is False
    assert stored(sql, "posts", "view_count", post) == 1


def drop_existence_index(r, table: str = "posts") -> None:
    keys = r.keys(f"{{{PREFIX}:*:ex:{table}")
    assert keys
    r.delete(*keys)


def test_lost_existence_index_falls_back_to_postgres(app, client, user, r, counters):
    post = create(client, user)
    drop_existence_index(r)
    assert counters.missing_indexes() == ["posts"]
    assert_error(client.post("/api/posts/999/view"), 404)
    assert_error(client.get("/api/posts/999"), 404)
    assert not r.keys(f"{{{PREFIX}:*:ex:posts")  # a miss writes nothing
    assert client.post(f"/api/posts/{post}/view").status_code == 204
    assert client.get(f"/api/posts/{post}").json["counts"]["view_count"] == 2
    assert counters.missing_indexes() == ["posts"]  # never rebuilt inside a request
    celery = app.extensions["celery"]
    with app.app_context():
        assert celery.tasks["counters.rebuild_index"].apply().get() == {"posts": 1}
    assert counters.missing_indexes() == []
    assert_error(client.post("/api/posts/999/view"), 404)
    assert client.post(f"/api/posts/{post}/view").status_code == 204
    assert client.get(f"/api/posts/{post}/counts").json["view_count"] == 3


def test_flush_rebuilds_a_lost_existence_index(client, user, r, counters):
    post = create(client, user)
    create(client, user, "articles")
    drop_existence_index(r)
    drop_existence_index(r, "articles")
    flush(client)
    assert counters.missing_indexes() == []
    assert client.post(f"/api/posts/{post}/view").status_code == 204


def test_existence_index_is_marked_on_create_and_cleared_on_delete(client, user, counters):
    counters.ensure_index(["posts"])
    post = create(client, user)
    assert counters.incr("posts.view_count", post, check_exists=True).name == "COUNTED"
    client.delete(f"/api/posts/{post}", headers=bearer(user))
    assert counters.incr("posts.view_count", post, check_exists=True).name == "MISSING"
