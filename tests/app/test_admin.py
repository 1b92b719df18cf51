"""/api/admin/counters: flush, reconcile, stats, schedule; ADMIN_TOKEN or nothing."""

import time
from datetime import datetime

import pytest
import sqlalchemy as sa

from tests.app.conftest import ADMIN_TOKEN, act, assert_error, bearer, create

ADMIN = bearer(ADMIN_TOKEN)
ENDPOINTS = [
    ("post", "/api/admin/counters/flush"),
    ("post", "/api/admin/counters/reconcile"),
    ("get", "/api/admin/counters/stats"),
    ("get", "/api/admin/counters/schedule"),
    ("put", "/api/admin/counters/schedule"),
]


def test_flush_applies_everything_and_reports(client, user, sql):
    post = create(client, user)
    client.post(f"/api/posts/{post}/view")
    act(client, user, "like", "post", post)
    response = client.post("/api/admin/counters/flush", headers=ADMIN)
    assert response.status_code == 200
    body = response.json
    assert body["flushed"] == 2 and body["batches"] == 1 and body["errors"] == []
    with sql.connect() as conn:
        row = conn.execute(sa.text("SELECT view_count, likes_count FROM posts")).one()
    assert tuple(row) == (1, 1)


def test_reconcile_fixes_drift_and_reports(client, user, sql):
    post = create(client, user)
    act(client, user, "like", "post", post)
    client.post("/api/admin/counters/flush", headers=ADMIN)
    with sql.begin() as conn:
        conn.execute(sa.text("UPDATE posts SET likes_count = 5, collects_count = 2"))
    response = client.post("/api/admin/counters/reconcile", headers=ADMIN)
    assert response.status_code == 200
    body = response.json
    assert body["fixed"] == 2 and body["checked"] == 4  # likes, collects, shares, comments
    fixed = {(f["counter"], f["was"], f["now"]) for f in body["fixes"]}
    assert fixed == {("likes_count", 5, 1), ("collects_count", 2, 0)}
    assert client.get(f"/api/posts/{post}/counts").json["likes_count"] == 1


def test_stats_report_pending_counters_and_the_last_runs(client, user):
    post = create(client, user)
    empty = client.get("/api/admin/counters/stats", headers=ADMIN).json
    assert empty["pending"] == 0 and empty["oldest_pending_age_s"] is None
    client.post(f"/api/posts/{post}/view")
    act(client, user, "like", "post", post)
    stats = client.get("/api/admin/counters/stats", headers=ADMIN)
    assert stats.status_code == 200
    body = stats.json
    assert body["pending"] == 2
    assert body["oldest_pending_age_s"] >= 0
    assert len(body["shards"]) == 4 and sum(s["pending"] for s in body["shards"]) == 2
    assert body["last_flush"] is None and body["last_reconcile"] is None
    client.post("/api/admin/counters/flush", headers=ADMIN)
    client.post("/api/admin/counters/reconcile", headers=ADMIN)
    body = client.get("/api/admin/counters/stats", headers=ADMIN).json
    assert body["pending"] == 0
    assert body["last_flush"]["flushed"] == 2
    assert body["last_reconcile"]["checked"] > 0


def test_stats_name_the_counters_and_time_the_last_runs(client, user, make_app):
    post = create(client, user)
    for _ in range(2):
        client.post(f"/api/posts/{post}/view")
    act(client, user, "like", "post", post)
    before = time.time()
    client.post("/api/admin/counters/flush", headers=ADMIN)
    client.post(f"/api/posts/{post}/view")  # pending again
    # another app instance (another process) reads the same shared state
    body = make_app().test_client().get("/api/admin/counters/stats", headers=ADMIN).json
    assert body["accepted"] == {"posts.likes_count": 1, "posts.view_count": 3}
    assert body["pending"] == 1 and body["inflight"] == 0
    shard = body["shards"][post % 4]
    assert shard["pending"] == 1 and shard["oldest_age_s"] >= 0
    assert all(s["oldest_age_s"] is None for s in body["shards"] if s["shard"] != post % 4)
    last = body["last_flush"]
    assert last["flushed"] == 2 and last["batches"] == 1 and last["duration_s"] >= 0
    at = datetime.fromisoformat(last["at"]).timestamp()
    assert before - 1 <= at <= time.time() + 1 and last["age_s"] >= 0
    assert body["flush_batch_duration"]["count"] == 1
    assert body["flush_batch_duration"]["mean_s"] == body["flush_batch_duration"]["sum_s"]
    assert body["totals"]["flushes"] == 1 and body["totals"]["counters_applied"] == 2
    assert body["last_reconcile"] is None


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("headers", [{}, bearer("wrong"), {"Authorization": ADMIN_TOKEN}])
def test_admin_needs_the_admin_token(client, method, path, headers):
    assert_error(getattr(client, method)(path, headers=headers), 401, "unauthorized")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_a_user_token_is_not_an_admin_token(client, user, method, path):
    assert_error(getattr(client, method)(path, headers=bearer(user)), 401)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("token", [None, ""])
def test_admin_is_disabled_without_admin_token(make_app, method, path, token):
    client = make_app(ADMIN_TOKEN=token).test_client()
    for headers in ({}, ADMIN, bearer("")):
        assert_error(getattr(client, method)(path, headers=headers), 403, "admin_disabled")
