"""Redis back OLDER than Postgres: a real redis-server SIGKILLed and restarted from an RDB
dump saved earlier. Nothing Postgres already holds is applied again, and a row created
after the dump is never reported missing."""

import signal

import pytest
import sqlalchemy as sa

from engine import Counters, Outcome
from tests.engine.conftest import REGISTRY, seed, stored
from tests.engine.test_faults import run_victim, wait_out_victim_lock
from tests.engine.test_reconcile import like

LOCK_TTL_MS = 300  # a dump taken mid-flush restores that flush's lock: let it lapse soon


def counters_on(server, sql, **kw) -> Counters:
    """A fresh process's view: a new client on the (restarted) server."""
    return Counters(server.client(), sql, REGISTRY, shards=1, flush_lock_ttl_ms=LOCK_TTL_MS, **kw)


def restart_older(server, sql, **kw) -> Counters:
    """SIGKILL the server, start it from its dump, wait out a flush lock the dump held."""
    server.rollback()
    c = counters_on(server, sql, **kw)
    lock = c.keys.flushing(0)
    if server.client().exists(lock):
        wait_out_victim_lock(c, server.client())
    return c


def hits(sql, row: int) -> int:
    return stored(sql, "items", "hits")[row]


def rolled_back(summaries) -> int:
    return sum(s.dropped_rollback for summary in summaries for s in summary.shards)


def test_restored_pending_deltas_postgres_already_holds_are_dropped(server, sql):
    c = counters_on(server, sql)
    (i,) = seed(sql, "items", 1)
    c.incr("items.hits", i, 1)
    c.flush_all()
    c.incr("items.hits", i, 10)
    server.checkpoint()  # the dump holds the pending +10
    c.incr("items.hits", i, 100)
    c.flush_all()
    assert hits(sql, i) == 111
    c = restart_older(server, sql)
    assert c.read("items", [i])[i]["hits"] == 111  # the restored +10 is not counted
    first = c.flush_all()
    assert hits(sql, i) == 111
    assert rolled_back([first]) == 1 and first.shards[0].discarded == {f"{i}:ih": 10}
    c.incr("items.hits", i, 1000)
    c.flush_all()
    assert hits(sql, i) == 1111
    assert c.buffer.dirty_shards() == []


def snapshot_while_claimed(server, sql, row: int) -> Counters:
    """Flush a +10 batch with a checkpoint taken between its claim and its seq, while a
    +100 lands in pending behind it: the dump holds an unnumbered inflight batch and
    its successor."""
    armed = []

    def hook(stage: str, shard: int) -> None:
        if stage == "claimed" and armed:
            armed.clear()
            c.incr("items.hits", row, 100)
            server.checkpoint()

    c = counters_on(server, sql, hook=hook)
    c.incr("items.hits", row, 1)
    c.flush_all()
    c.incr("items.hits", row, 10)
    armed.append(True)
    c.flush_all()
    assert hits(sql, row) == 11
    return c


@pytest.mark.parametrize("killed_before_release", [False, True])
def test_restored_unnumbered_batch_and_its_successor_are_not_applied_again(
    killed_before_release, server, sql, engine_db
):
    (i,) = seed(sql, "items", 1)
    c = snapshot_while_claimed(server, sql, i)
    c.flush_all()  # the +100 successor
    assert hits(sql, i) == 111
    restart_older(server, sql)
    if killed_before_release:
        # the flush that drops the restored batch dies between its commit and its release
        url = f"redis://127.0.0.1:{server.port}/0"
        assert run_victim(engine_db.url, 1, "committed", [url]) == -signal.SIGKILL
        wait_out_victim_lock(counters_on(server, sql), server.client())
    c = counters_on(server, sql)
    assert c.read("items", [i])[i]["hits"] == 111
    c.flush_all()
    c.flush_all()
    assert hits(sql, i) == 111
    c.incr("items.hits", i, 1000)  # after the rollback was seen: applied
    c.flush_all()
    c.flush_all()
    assert hits(sql, i) == 1111
    assert c.buffer.dirty_shards() == []


def test_restored_batch_postgres_holds_lets_its_unapplied_successor_apply(server, sql):
    (i,) = seed(sql, "items", 1)
    c = snapshot_while_claimed(server, sql, i)
    # the +100 successor was never flushed before the crash: it must not be lost
    c = restart_older(server, sql)
    assert c.read("items", [i])[i]["hits"] == 111
    summaries = [c.flush_all(), c.flush_all()]
    assert hits(sql, i) == 111
    assert rolled_back(summaries) == 1  # the +10 batch only
    assert c.buffer.dirty_shards() == []


def test_restored_backlog_claimed_in_parts_is_not_applied_again(server, sql):
    c = counters_on(server, sql, claim_max_fields=3)
    rows = seed(sql, "items", 10)
    c.incr_many([("items.hits", i, 1) for i in rows])
    c.flush_all()
    c.incr_many([("items.hits", i, 10) for i in rows])
    server.checkpoint()  # ten pending fields: applied below in four batches of three or less
    c.flush_all()
    assert stored(sql, "items", "hits") == {i: 11 for i in rows}
    c = restart_older(server, sql, claim_max_fields=3)
    assert c.read("items", rows) == {i: {"hits": 11, "likes": 0} for i in rows}
    c.flush_all()
    c.flush_all()
    assert stored(sql, "items", "hits") == {i: 11 for i in rows}
    c.incr_many([("items.hits", i, 100) for i in rows])
    c.flush_all()
    assert stored(sql, "items", "hits") == {i: 111 for i in rows}
    assert c.buffer.dirty_shards() == []


def test_rollback_to_before_a_wipe_drops_the_old_lineage(server, sql):
    c = counters_on(server, sql)
    (i,) = seed(sql, "items", 1)
    c.incr("items.hits", i, 1)
    c.flush_all()
    c.incr("items.hits", i, 10)
    server.checkpoint()
    c.flush_all()
    server.client().flushdb()  # a wipe: the next increments start a new lineage
    c.incr("items.hits", i, 100)
    c.flush_all()
    assert hits(sql, i) == 111
    c = restart_older(server, sql)  # the dump from before the wipe comes back
    assert c.read("items", [i])[i]["hits"] == 111
    c.flush_all()
    assert hits(sql, i) == 111
    c.incr("items.hits", i, 1000)
    c.flush_all()
    assert hits(sql, i) == 1111


def test_live_read_and_reconcile_ignore_restored_deltas_postgres_holds(server, sql):
    c = counters_on(server, sql)
    (i,) = seed(sql, "items", 1)
    like(c, sql, i, 1)
    c.flush_all()
    like(c, sql, i, 2)
    server.checkpoint()
    c.flush_all()
    c = restart_older(server, sql)
    assert c.read("items", [i])[i]["likes"] == 2
    assert c.reconcile().fixes == []
    c.flush_all()
    assert stored(sql, "items", "likes") == {i: 2}
    assert c.reconcile().fixes == []


def test_row_created_after_the_dump_is_never_reported_missing(server, sql):
    c = counters_on(server, sql)
    (old,) = seed(sql, "items", 1)
    c.existence.ensure_loaded(["items"])
    server.checkpoint()
    late = seed(sql, "items", 3)
    c.existence.mark("items", late)
    c = restart_older(server, sql)
    outcome, counts, row = c.bump_and_read("items.hits", late[0])
    assert outcome is Outcome.COUNTED and counts["hits"] == 1
    assert c.view("items.hits", late[1]) is True
    assert c.view("items.hits", old) is True
    keys = set(c.buffer.redis.keys())
    assert c.view("items.hits", 10**9) is False
    assert set(c.buffer.redis.keys()) == keys  # a missing row leaves nothing behind
    # the index was repaired in passing: no Postgres lookup needed any more
    assert c.incr("items.hits", late[0], check_exists=True) is Outcome.COUNTED
    assert c.incr("items.hits", late[2], check_exists=True) is Outcome.MISSING
    c.flush_all()
    assert stored(sql, "items", "hits") == {old: 1, late[0]: 2, late[1]: 1, late[2]: 0}


def test_lost_index_answers_from_postgres_and_is_rebuilt_only_on_request(server, sql):
    c = counters_on(server, sql)
    rows = seed(sql, "items", 2)
    c.existence.ensure_loaded(["items"])
    server.wipe()
    c = counters_on(server, sql)
    assert c.missing_indexes()
    assert c.view("items.hits", rows[0]) is True
    assert c.view("items.hits", 10**9) is False
    assert c.missing_indexes()  # never rebuilt inside an increment
    assert c.ensure_index() == {"items": 2, "notes": 0}
    assert c.missing_indexes() == []
    assert c.incr("items.hits", rows[1], check_exists=True) is Outcome.COUNTED
    with sql.begin() as conn:
        conn.execute(sa.text("DELETE FROM items WHERE id = :i"), {"i": rows[1]})
    assert c.rebuild_index("items") == 1
    assert c.incr("items.hits", rows[1], check_exists=True) is Outcome.MISSING
    c.flush_all()
    assert stored(sql, "items", "hits") == {rows[0]: 1}
