"""A backlog far larger than one batch drains in bounded batches, each applied once."""

import math
import signal

from tests.engine.conftest import seed, stored
from tests.engine.test_faults import run_victim, wait_out_victim_lock

MAX_FIELDS = 100


def test_a_claim_moves_at_most_max_fields_and_the_rest_follows_it(make_counters, sql, r):
    counters = make_counters(shards=1, claim_max_fields=MAX_FIELDS)
    ids = seed(sql, "items", 250)
    counters.incr_many([("items.hits", i, 1) for i in ids])
    claim = counters.buffer.claim(0, "t1")
    assert len(claim.deltas) == MAX_FIELDS and claim.partial
    rest = {k.decode() for k in r.hkeys(counters.keys.pending(0)) if not k.startswith(b"_")}
    assert len(rest) == 150 and not rest & set(claim.deltas)
    base = r.hget(counters.keys.pending(0), "_b").decode()
    assert base == str(claim.base)  # the rest comes after the same batch as the claim
    seq = counters.buffer.assign_seq(0, claim.token, 10**9)
    assert r.hget(counters.keys.pending(0), "_b").decode() == f"{claim.base.gen}:{seq}"


def test_a_backlog_drains_in_bounded_batches_exactly_once_despite_a_killed_flusher(
    make_counters, sql, engine_db, victim_redis, r
):
    counters = make_counters(shards=1, claim_max_fields=MAX_FIELDS)
    ids = seed(sql, "items", 1050)
    counters.incr_many([("items.hits", i, i % 7 + 1) for i in ids])
    counters.incr_many([("items.likes", i, 1) for i in ids[:5]])  # 1055 fields
    # a flusher applies one batch, claims the next and is killed
    assert run_victim(engine_db.url, 1, "claimed@2", victim_redis, MAX_FIELDS) == -signal.SIGKILL
    wait_out_victim_lock(counters, r)
    summary = counters.flush_all()  # resumes the orphan, then drains the rest
    assert [s.resumed for s in summary.shards][:1] == [True]
    assert all(s.counters <= MAX_FIELDS for s in summary.shards)
    assert 1 + len(summary.shards) == math.ceil(1055 / MAX_FIELDS)
    assert counters.buffer.dirty_shards() == []
    assert stored(sql, "items", "hits") == {i: i % 7 + 1 for i in ids}
    assert sum(stored(sql, "items", "likes").values()) == 5
