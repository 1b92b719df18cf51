"""Celery wiring: config, beat schedule, task names, and a real worker end to end."""

import subprocess
import sys

import pytest
import sqlalchemy as sa
from celery.app.utils import find_app
from celery.contrib.testing.worker import start_worker

from app import celery_utils
from engine import BufferUnavailable, StoreUnavailable
from tests.app.conftest import REDIS_DB, act, bearer, create, stored
from tests.servers import ROOT, redis_url

# the engine's tasks (engine.celery), and the original system's recount tasks
TASKS = [
    "counters.flush",
    "counters.flush_shards",
    "counters.reconcile",
    "counters.rebuild_index",
    "counters.retain",
    "app.tasks.update_post_counts",
    "app.tasks.update_article_counts",
    "app.tasks.update_post_comment_likes_count",
    "app.tasks.update_article_comment_likes_count",
]


def test_beat_schedule_runs_flush_and_reconcile_at_the_configured_intervals(make_app):
    app = make_app(COUNTERS_FLUSH_INTERVAL=7, COUNTERS_RECONCILE_INTERVAL=120)
    conf = app.extensions["celery"].conf
    schedule = conf.beat_schedule
    assert schedule["flush-counters"]["task"] == "counters.flush"
    assert schedule["flush-counters"]["schedule"] == 7
    assert schedule["flush-counters"]["options"]["expires"] == 7
    assert schedule["reconcile-counters"]["task"] == "counters.reconcile"
    assert schedule["reconcile-counters"]["schedule"] == 120
    assert conf.beat_scheduler == "redbeat.RedBeatScheduler"
    assert conf.redbeat_redis_url == redis_url(REDIS_DB)
    assert conf.redbeat_lock_timeout >= 5 * conf.beat_max_loop_interval


def test_default_intervals_come_from_the_environment(app_db, monkeypatch):
    from app import create_app
    from tests.app.conftest import app_config, close_app

    monkeypatch.setenv("COUNTERS_FLUSH_INTERVAL", "3")
    monkeypatch.setenv("COUNTERS_RECONCILE_INTERVAL", "600")
    config = app_config(app_db.url)
    del config["REDIS_URL"]
    app = create_app(config)
    try:
        schedule = app.extensions["celery"].conf.beat_schedule
        assert schedule["flush-counters"]["schedule"] == 3.0
        assert schedule["reconcile-counters"]["schedule"] == 600.0
    finally:
        close_app(app)


def test_celery_config_is_safe_for_redelivery(app):
    conf = app.extensions["celery"].conf
    assert conf.broker_url == conf.result_backend == redis_url(REDIS_DB)
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.timezone == "UTC" and conf.result_expires


def test_tasks_have_stable_names_and_the_retry_policy(app):
    celery = app.extensions["celery"]
    celery.loader.import_default_modules()  # the site's tasks, as a worker imports them
    registered = celery.tasks
    for name in TASKS:
        task = registered[name]
        assert task.max_retries == 5 and task.retry_backoff and task.retry_jitter
        assert task.retry_backoff_max == 60
        assert {StoreUnavailable, BufferUnavailable} <= set(task.autoretry_for)


def test_importing_celery_utils_builds_nothing():
    code = (
        "import app.celery_utils as m, flask; "
        "assert m._celery is None and 'celery' not in vars(m); "
        "assert not [o for o in vars(m).values() if isinstance(o, flask.Flask)]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_celery_cli_finds_the_app_lazily(app_db, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", app_db.url)
    monkeypatch.setenv("REDIS_URL", redis_url(REDIS_DB))
    monkeypatch.setattr(celery_utils, "_celery", None)
    found = find_app("app.celery_utils")  # what `celery -A app.celery_utils` does
    assert found is celery_utils.celery_app
    assert found.conf.broker_url == redis_url(REDIS_DB)
    assert "counters.flush" in found.tasks


@pytest.mark.timeout(60)
def test_worker_flushes_views_and_likes_exactly(app, client, user, other, sql, counters):
    post = create(client, user)
    for _ in range(4):
        client.post(f"/api/posts/{post}/view")
    act(client, user, "like", "post", post)
    act(client, other, "like", "post", post)
    act(client, other, "like", "post", post)  # a no-op
    celery = app.extensions["celery"]
    celery.conf.worker_hijack_root_logger = False
    with start_worker(celery, pool="solo", perform_ping_check=False):
        summary = celery.tasks["counters.flush"].delay().get(timeout=30)
    assert summary["flushed"] == 2 and summary["errors"] == []
    assert stored(sql, "posts", "view_count", post) == 4
    assert stored(sql, "posts", "likes_count", post) == 2
    with sql.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM counter_shards")).scalar_one() == 1
    assert client.get(f"/api/posts/{post}/counts", headers=bearer(user)).json["view_count"] == 4
    # the task sampled the engine for the dashboard: its point, then now's
    activity = counters.activity()
    assert len(activity["t"]) == 2 and activity["accepted"]["posts.view_count"][0] is None


def test_beat_schedule_runs_bucket_retention(make_app):
    schedule = make_app(COUNTERS_RETENTION_INTERVAL=90).extensions["celery"].conf.beat_schedule
    assert schedule["retain-counter-buckets"]["task"] == "counters.retain"
    assert schedule["retain-counter-buckets"]["schedule"] == 90


@pytest.mark.timeout(60)
def test_worker_runs_retention_and_buckets_still_sum_to_view_counts(app, client, user, sql):
    post = create(client, user)
    for _ in range(3):
        client.post(f"/api/posts/{post}/view")
    celery = app.extensions["celery"]
    celery.conf.worker_hijack_root_logger = False
    with start_worker(celery, pool="solo", perform_ping_check=False):
        celery.tasks["counters.flush"].delay().get(timeout=30)
        first = celery.tasks["counters.retain"].delay().get(timeout=30)
        again = celery.tasks["counters.retain"].delay().get(timeout=30)
    assert first["hours_rolled"] == again["hours_rolled"] == 0  # nothing is 14 days old
    assert set(first["windows_moved"]) == {
        f"{t}.view_count/{w}" for t in ("posts", "articles") for w in ("24h", "7d")
    }
    with sql.connect() as conn:
        buckets = conn.execute(
            sa.text("SELECT sum(n) FROM counter_hourly WHERE tbl = 'posts' AND row_id = :id"),
            {"id": post},
        ).scalar_one()
    assert buckets == stored(sql, "posts", "view_count", post) == 3
