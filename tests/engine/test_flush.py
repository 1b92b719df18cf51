"""Exactly-once flushing under concurrency, replays and deleted rows."""

import random
import threading
from collections import Counter as Tally

import pytest
import sqlalchemy as sa

from engine.flush import APPLY_SETTINGS, update_statement
from engine.sqlarrays import int_array
from tests.engine.conftest import seed, stored


@pytest.mark.parametrize("threads", [1, 4])
def test_randomized_increments_with_concurrent_flushes_land_exactly(make_counters, sql, threads):
    counters = make_counters(shards=8, flush_threads=threads)
    items, notes = seed(sql, "items", 60), seed(sql, "notes", 40)
    expected: Tally = Tally()
    lock = threading.Lock()
    stop = threading.Event()

    def writer(seed_: int) -> None:
        rnd = random.Random(seed_)
        for _ in range(400):
            table, ids, cols = rnd.choice(
                [("items", items, ["hits", "likes"]), ("notes", notes, ["hits"])]
            )
            row, col, n = rnd.choice(ids), rnd.choice(cols), rnd.randint(-3, 5)
            if rnd.random() < 0.2:
                other = rnd.choice(items)
                counters.incr_many([(f"{table}.{col}", row, n), ("items.hits", other, 1)])
                with lock:
                    expected[(table, col, row)] += n
                    expected[("items", "hits", other)] += 1
            else:
                counters.incr(f"{table}.{col}", row, n)
                with lock:
                    expected[(table, col, row)] += n

    def flusher() -> None:
        while not stop.is_set():
            counters.flush_all()

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    flushers = [threading.Thread(target=flusher) for _ in range(3)]
    for t in writers + flushers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in flushers:
        t.join()
    counters.flush_all()
    for table, cols in (("items", ["hits", "likes"]), ("notes", ["hits"])):
        for col in cols:
            got = stored(sql, table, col)
            want = {i: expected[(table, col, i)] for i in got}
            assert got == want, (table, col)
    assert counters.buffer.dirty_shards() == []


def test_flush_is_one_transaction_with_one_update_per_table(make_counters, sql):
    counters = make_counters(shards=1)
    items, notes = seed(sql, "items", 50), seed(sql, "notes", 50)
    counters.incr_many(
        [("items.hits", i, 1) for i in items] + [("notes.hits", i, 2) for i in notes]
    )
    counters.incr_many([("items.likes", i, 3) for i in items])
    statements = []
    sa.event.listen(sql, "before_cursor_execute", lambda *a: statements.append(a[2]))
    summary = counters.flush_all()
    updates = [s for s in statements if s.lstrip().startswith("UPDATE")]
    assert len(updates) == 2 and summary.as_dict()["batches"] == 1
    assert summary.counters == 150 and summary.as_dict()["rows"] == 100


def test_concurrent_flushes_of_one_shard_apply_the_batch_once(make_counters, sql):
    (i,) = seed(sql, "items", 1)
    barriers = {stage: threading.Barrier(2, timeout=10) for stage in ("claimed", "numbered")}

    def hook(stage: str, shard: int) -> None:
        if stage in barriers:  # both hold the same batch, then the same seq
            barriers[stage].wait()

    a, b = make_counters(shards=1, hook=hook), make_counters(shards=1, hook=hook)
    a.incr("items.hits", i, 7)
    results = []
    threads = [
        threading.Thread(target=lambda c=c: results.append(c.flush_shard(0))) for c in (a, b)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.already_applied for r in results) == [False, True]
    assert {r.seq for r in results} == {results[0].seq}
    assert stored(sql, "items", "hits") == {i: 7}
    assert a.buffer.dirty_shards() == []


def test_replayed_batch_is_recognised_and_released(make_counters, sql, r):
    (i,) = seed(sql, "items", 1)
    counters = make_counters(shards=1)
    counters.incr("items.hits", i, 5)
    claim = counters.buffer.claim(0, "crashed-flusher")
    assert claim.seq is None  # numbered only after the claim
    first = counters.flush_shard(0)  # resumes the claim, numbers it and applies it
    assert first.resumed and not first.already_applied
    # the same batch delivered again, as a redelivered task would find it
    keys = counters.keys
    r.hset(keys.inflight(0), mapping={f"{i}:ih": 5, "_t": 1})
    r.hset(keys.batch(0), mapping={"token": "again", "seq": first.seq, "claimed_ms": 1})
    again = counters.flush_shard(0)
    assert again.already_applied and again.seq == first.seq
    assert stored(sql, "items", "hits") == {i: 5}
    assert r.exists(keys.inflight(0)) == 0


@pytest.mark.parametrize("stall_at", ["claimed", "numbered"])
def test_stalled_flusher_is_fenced_after_newer_batches_commit(stall_at, make_counters, sql):
    """A flusher stalls right after its claim (or after numbering it); another flush
    finishes that batch, then claims and commits a newer one holding fresh deltas.
    The stalled one must neither apply its batch again nor pass the fresh deltas off
    as applied."""
    (i,) = seed(sql, "items", 1)
    paused, resume = threading.Event(), threading.Event()

    def slow_hook(stage: str, shard: int) -> None:
        if stage == stall_at:
            paused.set()
            resume.wait(10)

    slow, fast = make_counters(shards=1, hook=slow_hook), make_counters(shards=1)
    slow.incr("items.hits", i, 1)
    result = []
    t = threading.Thread(target=lambda: result.append(slow.flush_shard(0)))
    t.start()
    assert paused.wait(10)
    assert fast.flush_shard(0).resumed  # finishes the stalled batch
    fast.incr("items.hits", i, 10)
    fast.flush_shard(0)  # a newer batch
    fast.incr("items.hits", i, 100)  # pending when the stalled flusher wakes
    resume.set()
    t.join()
    assert result[0] is None or result[0].already_applied
    fast.flush_all()
    assert stored(sql, "items", "hits") == {i: 111}


def test_a_seq_taken_before_a_newer_commit_never_labels_fresh_deltas_applied(make_counters, sql):
    """Flusher B takes a seq from Postgres, is descheduled, and A claims, numbers and
    commits a batch meanwhile; B's seq is now below applied_seq. Fresh deltas must not
    be claimed under it."""
    (i,) = seed(sql, "items", 1)
    b_has_seq, go = threading.Event(), threading.Event()
    a, b = make_counters(shards=1), make_counters(shards=1)
    real_next = b.flusher._next_seq

    def slow_next() -> int:
        seq = real_next()
        b_has_seq.set()
        go.wait(10)
        return seq

    b.flusher._next_seq = slow_next
    a.incr("items.hits", i, 1)
    t = threading.Thread(target=b.flush_shard, args=(0,))
    t.start()
    assert b_has_seq.wait(10)
    a.flush_shard(0)  # numbers B's batch with a newer seq, applies, releases
    a.incr("items.hits", i, 5)
    a.flush_shard(0)
    a.incr("items.hits", i, 50)
    go.set()
    t.join()
    a.flush_all()
    assert stored(sql, "items", "hits") == {i: 56}


def test_deltas_for_deleted_rows_are_dropped_and_counted(make_counters, sql):
    counters = make_counters(shards=1)
    a, b, c = seed(sql, "items", 3)
    counters.incr_many([("items.hits", x, 2) for x in (a, b, c)] + [("items.likes", b, 1)])
    with sql.begin() as conn:
        conn.execute(sa.text("DELETE FROM items WHERE id = :b"), {"b": b})
    summary = counters.flush_all()
    assert stored(sql, "items", "hits") == {a: 2, c: 2}
    assert summary.as_dict()["rows_missing"] == 1
    assert summary.shards[0].deltas_dropped == 2
    assert summary.shards[0].missing == [("items", b)]
    assert counters.buffer.dirty_shards() == []


def test_million_increments_cost_the_same_sql_as_a_thousand(make_counters, sql):
    counters = make_counters(shards=4)
    ids = seed(sql, "items", 1000)
    counters.flusher._ensure_edges()  # once per process, before its first flush

    def flush_work(per_counter: int):
        for _ in range(per_counter // 100):
            counters.incr_many([("items.hits", i, 1) for i in ids for _ in range(100)])
        if per_counter < 100:
            counters.incr_many([("items.hits", i, 1) for i in ids])
        statements, rows = [], []
        listeners = [
            ("before_cursor_execute", lambda *a: statements.append(a[2])),
            ("after_cursor_execute", lambda *a: rows.append(a[1].rowcount)),
        ]
        for name, fn in listeners:
            sa.event.listen(sql, name, fn)
        summary = counters.flush_all()
        for name, fn in listeners:
            sa.event.remove(sql, name, fn)
        return len(statements), sum(rows), summary.counters

    small = flush_work(1)
    big = flush_work(1000)
    assert small == big == (small[0], small[1], 1000)
    assert set(stored(sql, "items", "hits").values()) == {1001}


def test_live_read_never_double_counts_between_commit_and_release(make_counters, sql):
    (i,) = seed(sql, "items", 1)
    committed, release = threading.Event(), threading.Event()

    def hook(stage: str, shard: int) -> None:
        if stage == "committed":
            committed.set()
            release.wait(10)

    flusher, reader = make_counters(shards=1, hook=hook), make_counters(shards=1)
    reader.incr("items.hits", i, 3)
    t = threading.Thread(target=flusher.flush_shard, args=(0,))
    t.start()
    assert committed.wait(10)
    reader.incr("items.hits", i, 1)
    assert stored(sql, "items", "hits") == {i: 3}
    assert reader.read("items", [i]) == {i: {"hits": 4, "likes": 0}}
    release.set()
    t.join()
    assert reader.read("items", [i]) == {i: {"hits": 4, "likes": 0}}


def test_a_shard_locked_by_another_flusher_is_skipped_not_lost(make_counters, sql, r):
    counters = make_counters(shards=2)
    ids = seed(sql, "items", 4)
    counters.incr_many([("items.hits", i, 1) for i in ids])
    busy = counters.keys.shard_of(ids[0])
    assert counters.buffer.lock(busy, "another-flusher")
    first = counters.flush_shards([0, 1])
    assert first.skipped == [busy] and len(first.shards) == 1
    assert r.get(counters.keys.flushing(busy)) == b"another-flusher"  # not ours to drop
    counters.buffer.unlock(busy, "another-flusher")
    assert counters.flush_all().skipped == []
    assert stored(sql, "items", "hits") == {i: 1 for i in ids}
    assert r.exists(counters.keys.flushing(0), counters.keys.flushing(1)) == 0


@pytest.mark.parametrize("columns", [("hits",), ("hits", "likes")])
def test_batch_update_plan_walks_rows_by_primary_key_in_id_order(sql, columns):
    """The lock order of the UPDATE is the order of its plan's outer loop: the sorted
    deltas, each row found through the primary key (no hash join, no table scan)."""
    ids = seed(sql, "items", 2000)
    params = {}
    for k in range(len(columns)):
        params[f"i{k}"] = int_array(ids[::-1])
        params[f"d{k}"] = int_array([1] * len(ids))
    with sql.begin() as conn:
        conn.execute(APPLY_SETTINGS)
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                sa.text("EXPLAIN " + update_statement("items", columns).text), params
            )
        )
    sort_keys = [
        line.split("Sort Key:")[1].strip() for line in plan.splitlines() if "Sort Key:" in line
    ]
    assert "Nested Loop" in plan and [k.rsplit(".", 1)[-1] for k in sort_keys] == ["id"]
    assert "Index Scan using items_pkey" in plan
    assert "Hash Join" not in plan and "Seq Scan" not in plan
