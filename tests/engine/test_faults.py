"""Real faults: a flushing process SIGKILLed at each stage, Postgres cut off, Redis wiped."""

import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from engine import Counters, StoreUnavailable
from tests.engine.conftest import REGISTRY, assert_buckets_match, seed, stored
from tests.proxy import proxied
from tests.servers import ROOT


def run_victim(
    db_url: str, shards: int, stage: str, victim_redis: list[str], max_fields: int | None = None
) -> int:
    url, *cluster = victim_redis
    bound = [str(max_fields)] if max_fields else []
    proc = subprocess.run(
        [sys.executable, "-m", "tests.engine.flush_victim", db_url, url, str(shards), stage]
        + bound
        + cluster,
        cwd=ROOT,
        timeout=60,
    )
    return proc.returncode


def wait_out_victim_lock(counters, r) -> None:
    """The dead victim still holds a shard's flush lock; it lapses after its short TTL."""
    locks = [counters.keys.flushing(s) for s in range(counters.keys.shards)]
    assert any(r.exists(k) for k in locks)
    deadline = time.monotonic() + 10
    while any(r.exists(k) for k in locks):
        assert time.monotonic() < deadline, "the victim's flush lock never expired"
        time.sleep(0.05)


@pytest.mark.parametrize("stage", ["claimed", "numbered", "applied", "committed"])
def test_flush_killed_at_each_stage_applies_every_delta_once(
    stage, make_counters, sql, engine_db, victim_redis, r
):
    counters = make_counters(shards=2)
    ids = seed(sql, "items", 20)
    notes = seed(sql, "notes", 20)  # notes.hits keeps hourly buckets
    counters.incr_many([("items.hits", i, i) for i in ids] + [("items.likes", i, 1) for i in ids])
    counters.incr_many([("notes.hits", i, i) for i in notes])
    before = {i: counters.window_series("notes.hits", i, "24h").total for i in notes}
    assert before == {i: i for i in notes}
    assert run_victim(engine_db.url, 2, stage, victim_redis) == -signal.SIGKILL
    # window reads stay exact while the claim is orphaned (and after its commit)
    assert {i: counters.window_series("notes.hits", i, "24h").total for i in notes} == before
    # increments keep arriving while the claim is orphaned
    counters.incr_many([("items.hits", i, 100) for i in ids])
    counters.incr_many([("notes.hits", i, 100) for i in notes])
    wait_out_victim_lock(counters, r)
    first = counters.flush_all()
    second = counters.flush_all()
    assert stored(sql, "notes", "hits") == {i: i + 100 for i in notes}
    assert_buckets_match(sql)
    assert {i: counters.window_series("notes.hits", i, "24h").total for i in notes} == {
        i: i + 100 for i in notes
    }
    assert sorted(counters.trending("notes.hits", "24h", 100)) == [(i, i + 100) for i in notes]
    # the victim flushes its two shards at once: the one it died on is resumed
    resumed = [s for s in first.shards if s.resumed]
    assert resumed
    if stage == "committed":
        assert any(s.already_applied for s in resumed)
    assert stored(sql, "items", "hits") == {i: i + 100 for i in ids}
    assert stored(sql, "items", "likes") == {i: 1 for i in ids}
    assert counters.buffer.dirty_shards() == []
    assert second.counters == 0


def test_postgres_unreachable_keeps_deltas_until_it_is_back(r, sql, engine_db):
    proxy, url = proxied(engine_db.url, 5432)
    via_proxy = sa.create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 2},
    )
    try:
        counters = Counters(r, via_proxy, REGISTRY, shards=2)
        ids = seed(sql, "items", 10)
        counters.incr_many([("items.hits", i, 3) for i in ids])
        counters.flush_all()  # warm the pool through the proxy
        counters.incr_many([("items.hits", i, 2) for i in ids])
        proxy.cut()
        with pytest.raises(StoreUnavailable) as failed:
            counters.flush_all()
        assert failed.value.summary.errors
        counters.incr_many([("items.hits", i, 1) for i in ids])  # the hot path still works
        assert stored(sql, "items", "hits") == {i: 3 for i in ids}
        assert counters.buffer.dirty_shards()
        proxy.restore()
        counters.flush_all()
        counters.flush_all()
        assert stored(sql, "items", "hits") == {i: 6 for i in ids}
        assert counters.buffer.dirty_shards() == []
    finally:
        via_proxy.dispose()
        proxy.close()


def test_redis_wiped_between_flushes_new_batches_still_apply(make_counters, sql, r):
    counters = make_counters(shards=1)
    (i,) = seed(sql, "items", 1)
    for n in (1, 2):
        counters.incr("items.hits", i, n)
        counters.flush_all()
    r.flushdb()  # seq keys gone; Postgres remembers applied_seq
    counters.incr("items.hits", i, 10)
    result = counters.flush_all()
    assert not result.shards[0].already_applied
    assert stored(sql, "items", "hits") == {i: 13}
    assert counters.read("items", [i])[i]["hits"] == 13


def test_redis_wiped_after_commit_before_release_loses_nothing_acknowledged_later(
    make_counters, sql, r, engine_db, victim_redis
):
    counters = make_counters(shards=1)
    (i,) = seed(sql, "items", 1)
    counters.incr("items.hits", i, 4)
    assert run_victim(engine_db.url, 1, "committed", victim_redis) == -signal.SIGKILL
    r.flushdb()  # the committed-but-unreleased batch and the victim's lock vanish
    counters.incr("items.hits", i, 5)
    counters.flush_all()
    assert stored(sql, "items", "hits") == {i: 9}
