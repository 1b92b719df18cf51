"""Small flushes: every dirty shard's batch in one transaction (engine/flush_combined.py),
exactly once under kills, stalls and concurrent flushers."""

import functools
import signal
import threading
import time

import pytest
import sqlalchemy as sa

from engine import StoreUnavailable
from harness.round_trips import counting_round_trips
from tests.engine.conftest import assert_buckets_match, seed, stored
from tests.engine.test_faults import run_victim, wait_out_victim_lock

SHARDS = 4


def spread(counters, sql, n: int = 40):
    """Items and notes with deltas in every shard; returns (items, notes)."""
    items, notes = seed(sql, "items", n), seed(sql, "notes", n)
    counters.incr_many(
        [("items.hits", i, i) for i in items] + [("items.likes", i, 1) for i in items]
    )
    counters.incr_many([("notes.hits", i, 2) for i in notes])
    assert sorted(counters.buffer.dirty_shards()) == list(range(counters.shards))
    return items, notes


def ledger(sql) -> dict[int, int]:
    with sql.connect() as conn:
        query = sa.text("SELECT shard, applied_seq FROM counter_shards")
        return dict(conn.execute(query).all())


def test_small_flush_is_one_transaction_for_every_shard(make_counters, sql):
    counters = make_counters(shards=SHARDS)
    items, notes = spread(counters, sql)
    counters.flusher._ensure_edges()  # once per process, before its first flush
    statements, commits = [], []
    sa.event.listen(sql, "before_cursor_execute", lambda *a: statements.append(a[2]))
    sa.event.listen(sql, "commit", lambda *a: commits.append(1))
    summary = counters.flush_all()
    updates = [s for s in statements if s.lstrip().startswith("UPDATE")]
    marks = [s for s in statements if "INSERT INTO counter_shards" in s]
    assert len(updates) == 2 and len(marks) == 1 and len(commits) == 1
    assert sorted(s.shard for s in summary.shards) == list(range(SHARDS))
    assert summary.counters == 3 * len(items) and summary.as_dict()["rows"] == 2 * len(items)
    for s in summary.shards:  # each shard's own counts
        mine = [i for i in items if counters.keys.shard_of(i) == s.shard]
        mine_notes = [i for i in notes if counters.keys.shard_of(i) == s.shard]
        assert s.counters == 2 * len(mine) + len(mine_notes)
        assert s.rows == len(mine) + len(mine_notes) and s.buckets == len(mine_notes)
    assert ledger(sql) == {s.shard: s.seq for s in summary.shards}
    assert len({s.seq for s in summary.shards}) == SHARDS
    assert stored(sql, "items", "hits") == {i: i for i in items}
    assert stored(sql, "items", "likes") == {i: 1 for i in items}
    assert_buckets_match(sql)
    assert counters.buffer.dirty_shards() == []


def test_a_small_flush_is_five_redis_round_trips_and_survives_a_script_flush(make_counters, sql, r):
    """Locks, claims, numbering, releases (with the unlocks) and the flush's stats: one
    round trip each, for every shard at once. After a SCRIPT FLUSH (a restart, a failover)
    each step's scripts answer NOSCRIPT, run nothing, and are sent once more."""
    counters = make_counters(shards=SHARDS)
    items, notes = spread(counters, sql)
    counters.flush_all()  # scripts loaded, connections open
    counters.incr_many([("items.hits", i, 1) for i in items])
    with counting_round_trips() as sent:
        summary = counters.flush_all()
    assert len(sent) == 5 and len(summary.applied) == SHARDS
    counters.incr_many([("items.hits", i, 10) for i in items])
    r.script_flush()
    assert counters.flush_all().counters == len(items)
    assert stored(sql, "items", "hits") == {i: i + 11 for i in items}
    assert stored(sql, "notes", "hits") == {i: 2 for i in notes}
    assert counters.buffer.dirty_shards() == []


def test_the_ledger_statement_and_the_numbering_run_beside_the_flushing_thread(make_counters, sql):
    """The ledger statement runs on a helper thread while the flushing thread splits the
    claims; the numbering scripts while it runs the UPDATE. The commit waits for both."""
    counters = make_counters(shards=SHARDS)
    items, _ = spread(counters, sql)
    counters.flusher._ensure_edges()
    on: dict[str, set[str]] = {}

    def where(conn, cursor, statement, *rest) -> None:
        what = "mark" if "INSERT INTO counter_shards" in statement else statement.split()[0]
        on.setdefault(what, set()).add(threading.current_thread().name)

    buffer, number_many = counters.buffer, counters.buffer.number_many

    def numbering(batches):  # the engine's own, noting the thread it runs on
        on.setdefault("numbering", set()).add(threading.current_thread().name)
        return number_many(batches)

    buffer.number_many = numbering
    sa.event.listen(sql, "before_cursor_execute", where)
    flushing = threading.Thread(target=counters.flush_all, name="flushing")
    flushing.start()
    flushing.join(30)
    sa.event.remove(sql, "before_cursor_execute", where)
    assert len(on["mark"]) == 1 and on["mark"] != {"flushing"}
    assert on["numbering"] == on["mark"]  # the round's own helper
    assert on["UPDATE"] == {"flushing"}
    assert stored(sql, "items", "hits") == {i: i for i in items}


def test_a_backlog_flushes_each_shard_in_its_own_transaction(make_counters, sql):
    counters = make_counters(shards=SHARDS, combine_max_fields=10)
    items, _ = spread(counters, sql)
    statements = []
    sa.event.listen(sql, "before_cursor_execute", lambda *a: statements.append(a[2]))
    summary = counters.flush_all()
    marks = [s for s in statements if "INSERT INTO counter_shards" in s]
    assert len(marks) == SHARDS and not any(":shards" in s for s in marks)
    assert sorted(s.shard for s in summary.shards) == list(range(SHARDS))
    assert stored(sql, "items", "hits") == {i: i for i in items}


def test_rows_deleted_before_a_combined_flush_are_counted_on_their_shard(make_counters, sql):
    counters = make_counters(shards=SHARDS)
    items, _ = spread(counters, sql)
    gone = items[:3]
    with sql.begin() as conn:
        conn.execute(sa.text("DELETE FROM items WHERE id = ANY(:ids)"), {"ids": gone})
    summary = counters.flush_all()
    for s in summary.shards:
        mine = sorted(i for i in gone if counters.keys.shard_of(i) == s.shard)
        assert sorted(row for _, row in s.missing) == mine
        assert s.rows_missing == len(mine) and s.deltas_dropped == 2 * len(mine)
    assert stored(sql, "items", "hits") == {i: i for i in items[3:]}


@pytest.mark.parametrize("apart", [False, True], ids=["together", "apart"])
@pytest.mark.parametrize(
    "stage", ["claimed@1", "claimed@3", "numbered@2", "applied@4", "committed@1", "committed@3"]
)
def test_flush_killed_mid_flush_applies_every_delta_once(
    stage, apart, make_counters, sql, engine_db, victim_redis, r
):
    """The victim dies at the N-th shard's hook of a stage: together, it had claimed every
    shard (and at "committed", committed them all); apart, only the shards it reached."""
    counters = make_counters(shards=SHARDS)
    items, notes = spread(counters, sql)
    url, *cluster = victim_redis
    args = [url, *(["apart"] if apart else []), *cluster]
    assert run_victim(engine_db.url, SHARDS, stage, args) == -signal.SIGKILL
    counters.incr_many([("items.hits", i, 100) for i in items])  # more while orphaned
    counters.incr_many([("notes.hits", i, 100) for i in notes])
    wait_out_victim_lock(counters, r)
    first = counters.flush_all()
    assert counters.flush_all().counters == 0
    assert stored(sql, "items", "hits") == {i: i + 100 for i in items}
    assert stored(sql, "items", "likes") == {i: 1 for i in items}
    assert stored(sql, "notes", "hits") == {i: 102 for i in notes}
    assert_buckets_match(sql)
    resumed = {s.shard for s in first.shards if s.resumed}
    if not apart:
        assert resumed == set(range(SHARDS))  # the victim claimed every shard at once
        done = {s.shard for s in first.shards if s.already_applied}
        assert done == (set(range(SHARDS)) if stage.startswith("committed") else set())
    assert counters.buffer.dirty_shards() == []


def stalling_at(stage_name: str):
    """A stage hook that stalls the first time ``stage_name`` comes; (hook, paused,
    resume) events."""
    paused, resume = threading.Event(), threading.Event()

    def hook(stage: str, shard: int) -> None:
        if stage == stage_name and not paused.is_set():
            paused.set()
            resume.wait(10)

    return hook, paused, resume


def test_a_stalled_combined_flush_is_fenced_per_shard(make_counters, sql):
    """A combined flush stalls after claiming every shard; its locks lapse and another
    flush finishes its batches and commits newer ones. When it wakes, each shard's ledger
    row fences it: nothing is applied twice, nothing fresh is lost."""
    slow_hook, paused, resume = stalling_at("claimed")
    slow = make_counters(shards=SHARDS, hook=slow_hook, flush_lock_ttl_ms=200)
    fast = make_counters(shards=SHARDS)
    items, notes = spread(slow, sql)
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(slow.flush_all()))
    t.start()
    assert paused.wait(10)
    wait_out_lock(slow)
    assert {s.shard for s in fast.flush_all().shards if s.resumed} == set(range(SHARDS))
    fast.incr_many([("items.hits", i, 10) for i in items])
    fast.flush_all()
    fast.incr_many([("items.hits", i, 100) for i in items])  # pending when it wakes
    resume.set()
    t.join()
    assert all(s.already_applied for s in outcome[0].shards)
    fast.flush_all()
    assert stored(sql, "items", "hits") == {i: i + 110 for i in items}
    assert stored(sql, "notes", "hits") == {i: 2 for i in notes}
    assert_buckets_match(sql)


def test_a_combined_flush_stalled_in_its_transaction_is_waited_for_and_applied_once(
    make_counters, sql
):
    """A combined flush stalls after recording and numbering its batches, inside its
    transaction (the ledger rows locked); its locks lapse. Another flush resumes the
    batches and waits on the ledger rows; once the stalled one commits, the other finds
    every batch applied. Each delta lands once."""
    slow_hook, paused, resume = stalling_at("numbered")
    slow = make_counters(shards=SHARDS, hook=slow_hook, flush_lock_ttl_ms=200)
    fast = make_counters(shards=SHARDS)
    items, notes = spread(slow, sql)
    outcome, other = [], []
    t = threading.Thread(target=lambda: outcome.append(slow.flush_all()))
    t.start()
    assert paused.wait(10)
    wait_out_lock(slow)
    waiting = threading.Thread(target=lambda: other.append(fast.flush_all()))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()  # held back by the ledger rows of the stalled transaction
    resume.set()
    t.join()
    waiting.join()
    assert {s.shard for s in outcome[0].applied} == set(range(SHARDS))
    assert not other[0].applied
    assert fast.flush_all().counters == 0
    assert stored(sql, "items", "hits") == {i: i for i in items}
    assert stored(sql, "items", "likes") == {i: 1 for i in items}
    assert stored(sql, "notes", "hits") == {i: 2 for i in notes}
    assert_buckets_match(sql)
    assert fast.buffer.dirty_shards() == []


def wait_out_lock(counters) -> None:
    """The stalled flush's locks lapse after their short TTL."""
    r = counters.buffer.redis
    locks = [counters.keys.flushing(s) for s in range(counters.shards)]
    for _ in range(200):
        if not any(r.exists(k) for k in locks):
            return
        time.sleep(0.05)
    raise AssertionError("the stalled flush's locks never lapsed")


def run_together(*calls) -> None:
    """Start ``calls`` at the same moment, each in its own thread; wait for them."""
    go = threading.Barrier(len(calls), timeout=10)
    threads = [threading.Thread(target=lambda c=c: (go.wait(), c())) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def flush_into(counters, summaries: list) -> None:
    summaries.append(counters.flush_shards(range(SHARDS)))


def test_two_flushers_at_once_apply_every_batch_once(make_counters, sql):
    """Two workers flush the same shards at the same moment, round after round (a task
    delivered twice): each batch is applied by one of them, once."""
    a, b = make_counters(shards=SHARDS), make_counters(shards=SHARDS)
    items, notes = spread(a, sql)
    for round_ in range(5):
        if round_:
            a.incr_many([("items.hits", i, 1) for i in items])
        summaries: list = []
        run_together(*(functools.partial(flush_into, c, summaries) for c in (a, b)))
        applied = sorted(s.shard for summary in summaries for s in summary.applied)
        # each shard applied by one of them: the other found it locked, or already done
        assert applied == list(range(SHARDS))
    a.flush_all()
    assert stored(sql, "items", "hits") == {i: i + 4 for i in items}
    assert stored(sql, "notes", "hits") == {i: 2 for i in notes}
    assert_buckets_match(sql)
    assert a.buffer.dirty_shards() == []


def test_a_batch_that_fails_its_statement_holds_back_only_its_shard(make_counters, sql):
    counters = make_counters(shards=SHARDS)
    items, _ = spread(counters, sql)
    bad = items[0]
    with sql.begin() as conn:  # one more hit overflows bigint: that batch cannot apply
        conn.execute(
            sa.text("UPDATE items SET hits = 9223372036854775807 WHERE id = :i"), {"i": bad}
        )
    with pytest.raises(StoreUnavailable) as failed:
        counters.flush_all()
    summary = failed.value.summary
    assert len(summary.errors) == 1 and summary.errors[0].startswith(
        f"shard {counters.keys.shard_of(bad)}:"
    )
    assert sorted(s.shard for s in summary.applied) == sorted(
        set(range(SHARDS)) - {counters.keys.shard_of(bad)}
    )
    fine = [i for i in items if counters.keys.shard_of(i) != counters.keys.shard_of(bad)]
    assert {i: v for i, v in stored(sql, "items", "hits").items() if i in fine} == {
        i: i for i in fine
    }
