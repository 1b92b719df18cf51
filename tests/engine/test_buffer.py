"""Increments, existence checks and the key layout, against real Redis."""

import subprocess
import sys

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from engine import BufferUnavailable, Counters, Outcome, UnknownCounter
from engine.keys import Keys
from harness.round_trips import counting_round_trips
from tests.engine.conftest import REGISTRY, seed


def test_incr_is_one_hincrby_per_field_and_reads_back(counters, r, sql):
    ids = seed(sql, "items", 3)
    counters.incr("items.hits", ids[0])
    counters.incr("items.hits", ids[0], 4)
    counters.incr("items.likes", ids[1], 2)
    assert counters.read("items", ids) == {
        ids[0]: {"hits": 5, "likes": 0},
        ids[1]: {"hits": 0, "likes": 2},
        ids[2]: {"hits": 0, "likes": 0},
    }


def test_incr_many_touches_several_shards_in_one_call(counters, sql):
    ids = seed(sql, "items", 8)
    counters.incr_many([("items.hits", i, i) for i in ids] + [("items.likes", ids[0], 3)])
    live = counters.read("items", ids)
    assert {i: live[i]["hits"] for i in ids} == {i: i for i in ids}
    assert live[ids[0]]["likes"] == 3


def test_unknown_counter_is_refused_before_redis(counters, r):
    with pytest.raises(UnknownCounter):
        counters.incr("items.nope", 1)
    assert r.keys() == []


def layouts(counters) -> set[bytes]:
    """The shard layout copies (engine/layout.py): set up by a scope's first write."""
    return {counters.keys.layout(s).encode() for s in range(counters.keys.shards)}


def test_existence_check_refuses_missing_rows_without_creating_keys(counters, r, sql):
    ids = seed(sql, "items", 2)
    assert counters.incr("items.hits", ids[0], check_exists=True) is Outcome.NOT_LOADED
    assert r.keys() == []
    assert counters.existence.ensure_loaded(["items"]) == {"items": 2}
    before = set(r.keys())
    assert counters.incr("items.hits", 999, check_exists=True) is Outcome.MISSING
    assert counters.incr("items.hits", 2**62, check_exists=True) is Outcome.MISSING
    assert set(r.keys()) == before
    assert counters.incr("items.hits", ids[1], check_exists=True) is Outcome.COUNTED
    counters.existence.unmark("items", [ids[1]])
    assert counters.incr("items.hits", ids[1], check_exists=True) is Outcome.MISSING
    assert counters.read("items", [ids[1]])[ids[1]]["hits"] == 1


def test_checked_increments_in_one_call_answer_row_by_row(counters, r, sql):
    items, notes = seed(sql, "items", 2), seed(sql, "notes", 1)
    counters.existence.ensure_loaded(["items"])  # notes' index stays unloaded
    before = set(r.keys())
    outcomes = counters.incr_checked(
        [
            ("items.hits", items[0], 2),
            ("items.hits", 999, 1),
            ("notes.hits", notes[0], 1),
            ("items.likes", items[1], 3),
            ("items.hits", 2**62, 1),
        ]
    )
    assert outcomes == [
        Outcome.COUNTED,
        Outcome.MISSING,
        Outcome.NOT_LOADED,
        Outcome.COUNTED,
        Outcome.MISSING,  # beyond the bitmap: its set does not have it either
    ]
    live = counters.read("items", items)
    assert live[items[0]]["hits"] == 2 and live[items[1]]["likes"] == 3
    assert counters.read("notes", notes)[notes[0]]["hits"] == 0
    keys, shards = counters.keys, {counters.keys.shard_of(i) for i in items}
    made = {k(s).encode() for s in shards for k in (keys.pending, keys.accepted, keys.gen)}
    # the reads filled the read models of the rows that exist, and nothing else
    made |= {keys.read_model_state(keys.shard_of(i)).encode() for i in items + notes}
    made |= {keys.read_model("items", i).encode() for i in items}
    made |= {keys.read_model("notes", i).encode() for i in notes}
    assert set(r.keys()) - before <= made


def test_cancelling_deltas_leave_no_field_or_key(counters, r, sql):
    (i,) = seed(sql, "items", 1)
    counters.incr("items.likes", i, 1)
    counters.incr("items.likes", i, -1)
    shard = counters.keys.shard_of(i)  # the shard's lineage stays; the hash is gone
    assert set(r.keys()) - layouts(counters) == {
        counters.keys.accepted(shard).encode(),
        counters.keys.gen(shard).encode(),
    }
    assert r.hget(counters.keys.accepted(counters.keys.shard_of(i)), "il") == b"2"


def test_every_key_of_a_shard_sits_in_one_cluster_slot():
    keys = Keys(scope="ctr", shards=8)
    for s in range(8):
        names = keys.shard_keys(s) + [keys.exists(s, "posts"), keys.exists(s, "articles")]
        assert len({key_slot(n.encode()) for n in names}) == 1
    assert len({key_slot(keys.pending(s).encode()) for s in range(8)}) > 1


def test_redis_down_raises_buffer_unavailable(sql):
    dead = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    counters = Counters(dead, sql, REGISTRY, shards=2)
    with pytest.raises(BufferUnavailable):
        counters.incr("items.hits", 1)
    with pytest.raises(BufferUnavailable):
        counters.flush_all()


def test_engine_imports_neither_flask_nor_celery():
    code = (
        "import sys, engine, engine.flush, engine.reconcile, engine.live, engine.exists;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('flask', 'celery')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pipelined_scripts_are_one_round_trip_and_survive_a_script_flush(counters, r, sql):
    ids = seed(sql, "items", 6)
    counters.incr_many([("items.hits", i, 1) for i in ids])  # scripts loaded
    counters.read("items", ids[1:2])  # and the live read's connection open
    with counting_round_trips() as sent:
        counters.incr_many([("items.hits", i, 1) for i in ids])
        counters.read("items", ids[:1])  # the Redis half of a live read, then its fill
        assert len(sent) == 3
        counters.read("items", ids[:1])  # from the read model: one round trip
        assert len(sent) == 4
    r.script_flush()
    counters.incr_many([("items.hits", i, 1) for i in ids])  # NOSCRIPT: loaded, resent once
    assert counters.read("items", ids) == {i: {"hits": 3, "likes": 0} for i in ids}
