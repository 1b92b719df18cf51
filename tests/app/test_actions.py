"""POST /api/actions and DELETE /api/actions/<action>/<target>/<id>."""

import pytest
import sqlalchemy as sa

from tests.app.conftest import (
    act,
    assert_error,
    bearer,
    comment,
    create,
    new_user,
    row_counts,
    stored,
)

COUNTER = {"like": "likes_count", "collect": "collects_count", "share": "shares_count"}


def live(client, target: str, target_id: int) -> dict:
    path = {
        "post": f"/api/posts/{target_id}/counts",
        "article": f"/api/articles/{target_id}/counts",
        "comment": f"/api/comments/{target_id}/counts",
        "post_comment": f"/api/post-comments/{target_id}/counts",
    }[target]
    response = client.get(path)
    assert response.status_code == 200
    return response.json


@pytest.fixture
def targets(client, user):
    """One target of each type: {target_type: id}."""
    post = create(client, user, "posts")
    article = create(client, user, "articles")
    return {
        "post": post,
        "article": article,
        "comment": comment(client, user, "articles", article),
        "post_comment": comment(client, user, "posts", post),
    }


TOGGLES = [
    ("like", "post"),
    ("like", "article"),
    ("like", "comment"),
    ("like", "post_comment"),
    ("collect", "post"),
    ("collect", "article"),
]


@pytest.mark.parametrize(("action", "target"), TOGGLES)
def test_toggle_is_201_then_200_and_counts_once(client, user, other, targets, action, target):
    target_id = targets[target]
    first = act(client, other, action, target, target_id)
    assert first.status_code == 201
    assert first.json == {"action_type": action, "target_type": target, "target_id": target_id}
    assert act(client, other, action, target, target_id).status_code == 200
    assert live(client, target, target_id)[COUNTER[action]] == 1
    assert act(client, user, action, target, target_id).status_code == 201
    assert live(client, target, target_id)[COUNTER[action]] == 2


@pytest.mark.parametrize(("action", "target"), TOGGLES)
def test_undo_is_204_and_counts_go_back_then_404(client, other, targets, action, target):
    target_id = targets[target]
    act(client, other, action, target, target_id)
    path = f"/api/actions/{action}/{target}/{target_id}"
    assert client.delete(path, headers=bearer(other)).status_code == 204
    assert live(client, target, target_id)[COUNTER[action]] == 0
    assert_error(client.delete(path, headers=bearer(other)), 404, "not_found")
    assert live(client, target, target_id)[COUNTER[action]] == 0


@pytest.mark.parametrize("target", ["post", "article"])
def test_share_counts_every_time_and_cannot_be_deleted(client, other, targets, target, unchanged):
    target_id = targets[target]
    assert act(client, other, "share", target, target_id).status_code == 201
    assert act(client, other, "share", target, target_id).status_code == 201
    assert live(client, target, target_id)["shares_count"] == 2
    with unchanged():
        response = client.delete(f"/api/actions/share/{target}/{target_id}", headers=bearer(other))
        assert_error(response, 400, "not_undoable")


@pytest.mark.parametrize(
    ("action", "target"),
    [
        ("collect", "comment"),
        ("collect", "post_comment"),
        ("share", "comment"),
        ("share", "post_comment"),
        ("poke", "post"),
        ("like", "user"),
        ("LIKE", "post"),
        (None, "post"),
        ("like", None),
        (["like"], "post"),
        ("like", ["post"]),
        ("like", {"t": 1}),
    ],
)
def test_unsupported_action_or_target_is_400(client, other, targets, action, target, unchanged):
    target_id = targets.get(target, targets["post"]) if isinstance(target, str) else 1
    with unchanged():
        assert_error(act(client, other, action, target, target_id), 400)


@pytest.mark.parametrize("target_id", ["1", 1.0, 1.5, True, None, [1], {"id": 1}])
def test_target_id_of_wrong_type_is_400(client, other, targets, target_id, unchanged):
    with unchanged():
        assert_error(act(client, other, "like", "post", target_id), 400)


@pytest.mark.parametrize("target_id", [0, -1, 2**63, 10**30, 999])
@pytest.mark.parametrize("target", ["post", "article", "comment", "post_comment"])
def test_unknown_or_out_of_range_target_is_404(
    client, other, targets, target, target_id, unchanged
):
    with unchanged():
        assert_error(act(client, other, "like", target, target_id), 404, "not_found")


@pytest.mark.parametrize("body", ["{", "[]", "3", ""])
def test_bad_json_is_400(client, other, targets, body, unchanged):
    with unchanged():
        response = client.post(
            "/api/actions", data=body, content_type="application/json", headers=bearer(other)
        )
        assert_error(response, 400, "invalid_json")


def test_actions_need_a_user(client, targets, unchanged):
    with unchanged():
        body = {"action_type": "like", "target_type": "post", "target_id": targets["post"]}
        assert_error(client.post("/api/actions", json=body), 401)
        assert_error(client.post("/api/actions", json=body, headers=bearer("nope")), 401)
        assert_error(client.delete(f"/api/actions/like/post/{targets['post']}"), 401)


@pytest.mark.parametrize("bad", ["0", "-1", "9223372036854775808", "abc", "999"])
def test_delete_with_bad_or_unknown_target_is_404(client, other, targets, bad, unchanged):
    with unchanged():
        response = client.delete(f"/api/actions/like/post/{bad}", headers=bearer(other))
        assert_error(response, 404)


@pytest.mark.parametrize(
    "path", ["poke/post/1", "like/user/1", "collect/comment/1", "share/post_comment/1"]
)
def test_delete_of_unsupported_action_is_400(client, other, targets, path, unchanged):
    with unchanged():
        assert_error(client.delete(f"/api/actions/{path}", headers=bearer(other)), 400)


def test_another_users_like_is_not_removed(client, user, other, targets):
    post = targets["post"]
    act(client, user, "like", "post", post)
    assert_error(client.delete(f"/api/actions/like/post/{post}", headers=bearer(other)), 404)
    assert live(client, "post", post)["likes_count"] == 1


def test_like_and_collect_are_independent(client, other, targets):
    post = targets["post"]
    assert act(client, other, "like", "post", post).status_code == 201
    assert act(client, other, "collect", "post", post).status_code == 201
    counts = live(client, "post", post)
    assert counts["likes_count"] == counts["collects_count"] == 1


def test_flushed_columns_match_the_actions(client, user, other, targets, sql):
    carol = new_user(client, "carol")
    for token in (user, other, carol):
        act(client, token, "like", "post", targets["post"])
        act(client, token, "share", "article", targets["article"])
        act(client, token, "like", "comment", targets["comment"])
    act(client, carol, "collect", "post", targets["post"])
    client.delete(f"/api/actions/like/post/{targets['post']}", headers=bearer(other))
    client.delete(f"/api/actions/like/comment/{targets['comment']}", headers=bearer(user))
    admin = {"Authorization": "Bearer test-admin-token"}
    assert client.post("/api/admin/counters/flush", headers=admin).status_code == 200
    assert stored(sql, "posts", "likes_count", targets["post"]) == 2
    assert stored(sql, "posts", "collects_count", targets["post"]) == 1
    assert stored(sql, "articles", "shares_count", targets["article"]) == 3
    assert stored(sql, "comments", "likes_count", targets["comment"]) == 2
    assert stored(sql, "post_comments", "likes_count", targets["post_comment"]) == 0
    reconcile = client.post("/api/admin/counters/reconcile", headers=admin).json
    assert reconcile["fixed"] == 0 and reconcile["checked"] > 0


@pytest.fixture
def failing_commit(sql):
    """Postgres refuses the next commit that inserted a user_actions row: a deferred
    constraint trigger raises at COMMIT, after the delta went to Redis."""
    with sql.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'commit refused'; END $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON user_actions "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit()"
            )
        )
    yield
    with sql.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse_commit ON user_actions"))
        conn.execute(sa.text("DROP FUNCTION refuse_commit()"))


def test_a_failed_commit_takes_its_delta_back(
    client, other, targets, sql, counters, failing_commit
):
    post = targets["post"]
    response = act(client, other, "like", "post", post)
    assert_error(response, 500, "internal_error")
    assert counters.shared_stats()["accepted"]["pl"] == 2  # the +1, then the -1
    assert live(client, "post", post)["likes_count"] == 0
    assert row_counts(sql)["user_actions"] == 0
