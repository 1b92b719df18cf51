"""/metrics: the engine's shared state, read from Redis at scrape time, so every process
(another app instance, a CLI flush in another OS process) reports the same totals."""

import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from app.counters import REGISTRY
from engine import Counters, redis_client
from tests.app.conftest import ADMIN_TOKEN, PREFIX, REDIS_DB, act, bearer, create
from tests.servers import ROOT, redis_url

ADMIN = bearer(ADMIN_TOKEN)


def scrape(client) -> dict:
    """``{(sample name, frozenset(labels)): value}`` of one scrape, checked to parse."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.data.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def engine_totals(samples: dict) -> dict:
    """Every sample but the ones that depend on the time of the scrape."""
    return {k: v for k, v in samples.items() if k[0] != "counter_flush_lag_seconds"}


def test_every_app_instance_reports_the_same_traffic_and_flush(client, user, make_app):
    other = make_app().test_client()  # another process's view: its own app and clients
    post = create(client, user)
    for _ in range(3):
        client.post(f"/api/posts/{post}/view")
    client.get(f"/api/posts/{post}")  # counts one view too
    act(client, user, "like", "post", post)

    before = scrape(other)
    assert value(before, "counter_buffer_up") == 1
    assert value(before, "counter_increments_accepted_total", counter="posts.view_count") == 4
    assert value(before, "counter_increments_accepted_total", counter="posts.likes_count") == 1
    pending = [v for (n, _), v in before.items() if n == "counter_pending_counters"]
    assert len(pending) == 4 and sum(pending) == 2  # one row: view_count and likes_count
    shard = str(post % 4)
    assert value(before, "counter_pending_counters", shard=shard) == 2
    assert value(before, "counter_inflight_counters", shard=shard) == 0
    assert value(before, "counter_flush_lag_seconds") > 0
    assert value(before, "counter_flush_runs_total") == 0
    assert ("counter_last_flush_timestamp_seconds", frozenset()) not in before

    started = time.time()
    assert other.post("/api/admin/counters/flush", headers=ADMIN).json["flushed"] == 2
    mine, theirs = scrape(client), scrape(other)
    assert engine_totals(mine) == engine_totals(theirs)
    assert value(mine, "counter_flush_runs_total") == 1
    assert value(mine, "counter_flush_batches_total") == 1
    assert value(mine, "counter_flush_counters_applied_total") == 2
    assert value(mine, "counter_flush_batches_already_applied_total") == 0
    assert value(mine, "counter_flush_errors_total") == 0
    assert value(mine, "counter_last_flush_counters") == 2
    assert value(mine, "counter_flush_duration_seconds_count") == 1
    assert value(mine, "counter_flush_duration_seconds_bucket", le="+Inf") == 1
    assert value(mine, "counter_flush_duration_seconds_sum") > 0
    assert value(mine, "counter_pending_counters", shard=shard) == 0
    assert (
        value(mine, "counter_flush_lag_seconds") == value(theirs, "counter_flush_lag_seconds") == 0
    )
    assert started - 1 <= value(mine, "counter_last_flush_timestamp_seconds") <= time.time() + 1
    # accepted increments are a running total: a flush does not reset them
    assert value(mine, "counter_increments_accepted_total", counter="posts.view_count") == 4


def test_flush_duration_histogram_is_cumulative(client, user):
    for _ in range(3):
        client.post(f"/api/posts/{create(client, user)}/view")
        client.post("/api/admin/counters/flush", headers=ADMIN)
    samples = scrape(client)
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in samples.items()
        if name == "counter_flush_duration_seconds_bucket"
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1] == (float("inf"), 3)
    assert value(samples, "counter_flush_duration_seconds_count") == 3


def test_a_flush_in_another_os_process_shows_in_the_scrape(app_db, client, user):
    post = create(client, user)
    client.post(f"/api/posts/{post}/view")
    env = {
        **os.environ,
        "FLASK_SKIP_DOTENV": "1",
        "DATABASE_URL": app_db.url,
        "REDIS_URL": redis_url(REDIS_DB),
        "COUNTERS_SCOPE": PREFIX,
        "COUNTERS_SHARDS": "4",
    }
    for key in ("COUNTERS_REDIS_URL", "COUNTERS_REDIS_CLUSTER"):
        env.pop(key, None)
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "counters", "flush"],
        check=True,
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    samples = scrape(client)
    assert value(samples, "counter_flush_runs_total") == 1
    assert value(samples, "counter_flush_counters_applied_total") == 1
    assert value(samples, "counter_pending_counters", shard=str(post % 4)) == 0


def test_reconcile_runs_and_fixed_drift_are_reported(client, user, sql):
    post = create(client, user)
    act(client, user, "like", "post", post)
    client.post("/api/admin/counters/flush", headers=ADMIN)
    with sql.begin() as conn:
        conn.execute(sa.text("UPDATE posts SET likes_count = 5, shares_count = 2"))
    client.post("/api/admin/counters/reconcile", headers=ADMIN)
    samples = scrape(client)
    assert value(samples, "counter_reconcile_runs_total") == 1
    assert value(samples, "counter_reconcile_checked_total") == 4
    assert value(samples, "counter_reconcile_fixed_total") == 2
    assert value(samples, "counter_reconcile_drift_total") == 4 + 2  # |1-5| + |0-2|
    assert value(samples, "counter_last_reconcile_timestamp_seconds") > 0


def test_deltas_of_deleted_rows_are_counted_as_dropped(client, user):
    post, kept = create(client, user), create(client, user)
    client.post(f"/api/posts/{post}/view")
    act(client, user, "like", "post", post)
    client.post(f"/api/posts/{kept}/view")
    assert client.delete(f"/api/posts/{post}", headers=bearer(user)).status_code == 204
    client.post("/api/admin/counters/flush", headers=ADMIN)
    samples = scrape(client)
    assert value(samples, "counter_flush_rows_missing_total") == 1
    assert value(samples, "counter_flush_deltas_dropped_total") == 2
    assert value(samples, "counter_flush_counters_applied_total") == 3


def test_a_batch_left_by_a_crashed_flush_counts_as_resumed(client, user, counters, sql):
    post = create(client, user)
    client.post("/api/admin/counters/flush", headers=ADMIN)  # existence index loaded
    client.post(f"/api/posts/{post}/view")

    def killed(stage, shard):
        if stage == "claimed":
            raise KeyboardInterrupt("killed after the claim")

    client_redis = redis_client(redis_url(REDIS_DB))
    dying = Counters(
        client_redis, sql, REGISTRY, shards=counters.shards, scope=counters.scope, hook=killed
    )
    with pytest.raises(KeyboardInterrupt):
        dying.flush_all()
    dying.close()
    inflight = scrape(client)
    assert value(inflight, "counter_inflight_counters", shard=str(post % 4)) == 1
    assert value(inflight, "counter_flush_lag_seconds") > 0
    client.post("/api/admin/counters/flush", headers=ADMIN)
    samples = scrape(client)
    assert value(samples, "counter_flush_claims_resumed_total") == 1
    assert value(samples, "counter_flush_counters_applied_total") == 1
    assert value(samples, "counter_inflight_counters", shard=str(post % 4)) == 0


def test_flush_errors_are_counted_when_postgres_is_down(client, user, make_app):
    post = create(client, user)
    client.post("/api/admin/counters/flush", headers=ADMIN)  # existence index loaded
    client.post(f"/api/posts/{post}/view")
    no_db = make_app(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nope").test_client()
    assert no_db.post("/api/admin/counters/flush", headers=ADMIN).status_code == 503
    samples = scrape(client)
    assert value(samples, "counter_flush_errors_total") == 1
    assert value(samples, "counter_flush_runs_total") == 2  # the idle one, the failed one
    assert value(samples, "counter_flush_batches_total") == 0
    waiting = {"counter_pending_counters", "counter_inflight_counters"}
    assert sum(v for (n, _), v in samples.items() if n in waiting) == 1
    assert value(samples, "counter_flush_lag_seconds") > 0


def test_metrics_answer_without_redis(make_app):
    client = make_app(REDIS_URL="redis://127.0.0.1:1/15").test_client()  # nothing on port 1
    response = client.get("/metrics")
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.data.decode()))
    assert [(f.name, f.samples[0].value) for f in families] == [("counter_buffer_up", 0)]


def test_metric_names_carry_the_prefix_and_their_unit(client):
    names = {name for name, _ in scrape(client)}
    assert all(name.startswith("counter_") for name in names)
    for name in names:
        if "duration" in name or "lag" in name or "timestamp" in name:
            assert "_seconds" in name, name


def test_read_model_hits_and_fills_are_reported(client, user, make_app):
    post = create(client, user)
    before = scrape(client)
    for _ in range(3):
        assert client.get(f"/api/posts/{post}").status_code == 200
    other = scrape(make_app().test_client())
    reads, fills = "counter_read_model_reads_total", "counter_read_model_fills_total"
    for name, result, added in ((reads, "hit", 2), (reads, "miss", 1), (fills, "filled", 1)):
        got = value(other, name, result=result) - value(before, name, result=result)
        assert got == added, (name, result)
    assert value(other, fills, result="fenced") == value(before, fills, result="fenced")
