"""Parallel flush: ``counters.flush`` sends one ``counters.flush_shards`` task per group of dirty
shards, and several worker processes apply them at once, each batch exactly once."""

from __future__ import annotations

import json
import time

import pytest

from app.counters import counters
from engine import FLUSH_LOCK_TTL_MS, BufferUnavailable, StoreUnavailable
from tests.processes import wait_for
from tests.scale.conftest import (
    GROUP_SIZE,
    QUEUE,
    SHARDS,
    Traffic,
    backlog,
    make_posts,
    stack_env,
    totals,
    views_in_postgres,
    worker_cmd,
)

FANOUT_QUEUE = f"{QUEUE}-fanout"
TRAFFIC_S = 6.0
TRIGGER_EVERY_S = 0.25
RESULT_TIMEOUT_S = 30


def views(app, posts: list[int]) -> None:
    client = app.test_client()
    for post in posts:
        assert client.post(f"/api/posts/{post}/view").status_code == 204


def queued(r, queue: str) -> list[dict]:
    return [json.loads(raw) for raw in r.lrange(queue, 0, -1)]


def test_flush_shards_is_late_acked_and_retried_like_the_others(scale_app):
    app = scale_app(FANOUT_QUEUE)
    task = app.extensions["celery"].tasks["counters.flush_shards"]
    assert task.acks_late and task.reject_on_worker_lost
    assert task.max_retries == 5 and task.retry_backoff and task.retry_jitter
    assert {StoreUnavailable, BufferUnavailable} <= set(task.autoretry_for)


def test_flush_counters_sends_one_task_per_group_of_dirty_shards_only(scale_app, r):
    app = scale_app(FANOUT_QUEUE, COUNTERS_FLUSH_INTERVAL=7)
    posts = make_posts(app, SHARDS)  # ids 1..16: one post per shard
    dirty = posts[: 2 * GROUP_SIZE + 1]  # 9 shards: three groups
    views(app, dirty)
    with app.app_context():  # run here; its groups go to the broker
        sent = app.extensions["celery"].tasks["counters.flush"].apply().get()
    groups = [d["shards"] for d in sent["dispatched"]]
    assert sorted(s for g in groups for s in g) == sorted(p % SHARDS for p in dirty)
    assert [len(g) for g in groups] == [GROUP_SIZE, GROUP_SIZE, 1]
    messages = queued(r, FANOUT_QUEUE)
    assert [m["headers"]["task"] for m in messages] == ["counters.flush_shards"] * 3
    assert sorted(m["headers"]["id"] for m in messages) == sorted(
        d["id"] for d in sent["dispatched"]
    )
    # a group that waited a whole flush interval is superseded by the next flush
    assert all(m["headers"]["expires"] for m in messages)
    assert views_in_postgres(app, posts) == dict.fromkeys(posts, 0)  # nothing applied here


def test_few_dirty_shards_are_flushed_by_flush_counters_itself(scale_app, r):
    app = scale_app(FANOUT_QUEUE)
    posts = make_posts(app, GROUP_SIZE)
    views(app, posts)
    with app.app_context():
        summary = app.extensions["celery"].tasks["counters.flush"].apply().get()
    assert summary["flushed"] == GROUP_SIZE and summary["errors"] == []
    assert summary["skipped"] == [] and len(summary["shard_batches"]) == GROUP_SIZE
    assert queued(r, FANOUT_QUEUE) == []
    assert views_in_postgres(app, posts) == dict.fromkeys(posts, 1)


def test_a_shard_another_worker_is_flushing_is_skipped_and_left_pending(scale_app, r):
    app = scale_app(FANOUT_QUEUE)
    posts = make_posts(app, 2)
    views(app, posts)
    engine = counters.get(app)
    busy = posts[0] % SHARDS
    r.set(engine.keys.flushing(busy), "another-worker", px=FLUSH_LOCK_TTL_MS)
    first = engine.flush_shards(sorted(p % SHARDS for p in posts)).as_dict()
    assert first["skipped"] == [busy] and first["flushed"] == 1
    assert views_in_postgres(app, posts) == {posts[0]: 0, posts[1]: 1}
    r.delete(engine.keys.flushing(busy))  # that worker is done
    second = engine.flush_shards([busy]).as_dict()
    assert second["skipped"] == [] and second["flushed"] == 1
    assert views_in_postgres(app, posts) == {posts[0]: 1, posts[1]: 1}
    assert not r.exists(engine.keys.flushing(posts[1] % SHARDS))  # released


def shard_flushes(celery, sent: list) -> list[dict]:
    """The flush summaries behind ``counters.flush`` results: each one itself, or the
    results of the ``counters.flush_shards`` tasks it sent."""
    out = []
    for result in sent:
        summary = result.get(timeout=RESULT_TIMEOUT_S)
        if "dispatched" not in summary:
            out.append({**summary, "worker": "flush_counters"})
            continue
        for d in summary["dispatched"]:
            out.append(celery.AsyncResult(d["id"]).get(timeout=RESULT_TIMEOUT_S))
    return out


@pytest.mark.timeout(120)
def test_worker_processes_flush_concurrent_traffic_in_parallel_exactly_once(
    scale_app, app_db, processes
):
    app = scale_app(FANOUT_QUEUE)
    celery = app.extensions["celery"]
    posts = make_posts(app, 4 * SHARDS)
    env = stack_env(app_db.url, FANOUT_QUEUE, COUNTERS_FLUSH_INTERVAL=60)
    logs = []
    for name in ("w1", "w2"):  # two worker processes, two pool processes each
        _, log = processes.start(name, worker_cmd(FANOUT_QUEUE, name, concurrency=2), env)
        logs.append(log)
    for log in logs:
        wait_for(f"{log.stem} ready", lambda log=log: " ready." in log.read_text(), 60, logs)

    sent = []
    with Traffic(app, posts) as traffic:
        deadline = time.monotonic() + TRAFFIC_S
        while time.monotonic() < deadline:
            # two at once, as from two beats or a redelivery: their groups overlap
            sent += [celery.send_task("counters.flush") for _ in range(2)]
            time.sleep(TRIGGER_EVERY_S)
    assert traffic.failed == 0 and traffic.total > 0

    # drain with the fan-out alone: flush until nothing is pending or in flight
    def drained():
        result = celery.send_task("counters.flush")
        sent.append(result)
        shard_flushes(celery, [result])
        return backlog(app) == 0

    wait_for("the fan-out flush drains the buffer", drained, 30, logs)

    flushes = shard_flushes(celery, sent)
    assert all(f["errors"] == [] for f in flushes)
    applied = [
        (b["shard"], b["seq"])
        for f in flushes
        for b in f["shard_batches"]
        if not b["already_applied"]
    ]
    assert len(applied) == len(set(applied)), "a batch was applied twice"
    workers = {f["worker"] for f in flushes if f["worker"] != "flush_counters" and f["flushed"]}
    assert len(workers) == 2, f"flushes were not spread over both workers: {workers}"
    assert len({s for f in flushes for s in f["shards"]}) == SHARDS

    stats = totals(app)
    assert stats["batches_already_applied"] == 0  # the shard locks kept flushes apart
    assert stats["batches"] == len(applied)
    assert stats["counters_applied"] == sum(f["flushed"] for f in flushes)
    assert views_in_postgres(app, posts) == {p: traffic.acked[p] for p in posts}
