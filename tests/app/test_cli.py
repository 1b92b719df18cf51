"""flask --app app counters flush|reconcile|stats|schedule, users create, seed-demo."""

import json

import pytest
import sqlalchemy as sa

from engine import LayoutMismatch
from tests.app.conftest import PREFIX, assert_error, bearer, create


def run(app, *args):
    result = app.test_cli_runner().invoke(args=list(args))
    return result


def test_users_create_prints_a_working_token(app, client):
    result = run(app, "users", "create", "dora")
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["username"] == "dora"
    create(client, created["token"])


def test_users_create_refuses_bad_or_taken_names(app, user):
    assert run(app, "users", "create", "a!").exit_code != 0
    taken = run(app, "users", "create", "alice")
    assert taken.exit_code != 0 and "taken" in taken.output


def test_counters_commands_print_json(app, client, user, sql):
    post = create(client, user)
    client.post(f"/api/posts/{post}/view")
    stats = json.loads(run(app, "counters", "stats", "--json").output)
    assert stats["pending"] == 1
    flushed = json.loads(run(app, "counters", "flush").output)
    assert flushed["flushed"] == 1
    with sql.connect() as conn:
        assert conn.execute(sa.text("SELECT view_count FROM posts")).scalar_one() == 1
    reconciled = json.loads(run(app, "counters", "reconcile").output)
    assert reconciled["fixed"] == 0 and reconciled["checked"] == 4


def test_seed_demo_is_repeatable(app, client):
    first = run(app, "seed-demo")
    assert first.exit_code == 0, first.output
    seeded = json.loads(first.output)
    assert set(seeded["users"]) == {"alice", "bob", "carol"}
    assert len(seeded["posts"]) == 3 and len(seeded["articles"]) == 2
    post = seeded["posts"][0]
    assert client.get(f"/api/posts/{post}/counts").json["comments_count"] == 1
    again = json.loads(run(app, "seed-demo").output)
    assert again["posts"] == [] and again["articles"] == []
    assert len(client.get("/api/posts").json["items"]) == 3
    token = again["users"]["bob"]["token"]  # reissued, and it works
    assert client.delete(f"/api/posts/{post}", headers=bearer(token)).status_code == 403


def test_counters_stats_prints_readable_text_by_default(app, client, user):
    post = create(client, user)
    client.post(f"/api/posts/{post}/view")
    before = run(app, "counters", "stats")
    assert before.exit_code == 0, before.output
    assert "pending counters: 1 (inflight 0)" in before.output
    assert "last flush: never" in before.output
    assert "posts.view_count" in before.output
    run(app, "counters", "flush")
    run(app, "counters", "reconcile")
    after = run(app, "counters", "stats").output
    assert "pending counters: 0" in after
    assert "last flush: 20" in after and "1 counters in 1 batches" in after
    assert "4 checked, 0 fixed" in after
    assert json.loads(run(app, "counters", "stats", "--json").output)["totals"]["flushes"] == 1


def test_reshard_moves_a_live_scope_and_refuses_the_old_count(make_app, app, user, sql):
    scope = f"{PREFIX}rs"  # a scope of this test's own: the others stay on 4 shards
    old = make_app(COUNTERS_SCOPE=scope, COUNTERS_SHARDS=4)
    client = old.test_client()
    posts = [create(client, user, title=f"p{i}") for i in range(12)]
    for post in posts:
        assert client.post(f"/api/posts/{post}/view").status_code == 204
    result = run(old, "counters", "reshard", "8", "--yes")
    assert result.exit_code == 0, result.output
    moved = json.loads(result.stdout)
    assert (moved["from"], moved["to"]) == (4, 8) and moved["index"]["posts"] == len(posts)
    assert stored_views(sql, posts) == dict.fromkeys(posts, 1)  # drained into Postgres
    assert_error(client.post(f"/api/posts/{posts[0]}/view"), 503, "unavailable")
    with pytest.raises(LayoutMismatch):  # a process still started with the old count
        make_app(COUNTERS_SCOPE=scope, COUNTERS_SHARDS=4)
    new = make_app(COUNTERS_SCOPE=scope, COUNTERS_SHARDS=8).test_client()
    for post in posts:
        assert new.post(f"/api/posts/{post}/view").status_code == 204
    assert_error(new.post("/api/posts/987654/view"), 404)  # the index, rebuilt for 8
    assert new.get(f"/api/posts/{posts[3]}/counts").json["view_count"] == 2
    assert run(new.application, "counters", "flush").exit_code == 0
    assert stored_views(sql, posts) == dict.fromkeys(posts, 2)


def stored_views(sql, posts: list[int]) -> dict[int, int]:
    with sql.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT id, view_count FROM posts WHERE id = ANY(:ids)"), {"ids": posts}
        )
        return dict(rows.all())
