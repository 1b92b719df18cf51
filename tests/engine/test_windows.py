"""Time buckets written by the flush, live window reads, trending and retention (G9)."""

import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from engine import UnknownCounter, UnknownWindow, schema
from engine.keys import bucket_field, hour_of
from engine.windows import HOUR_S
from tests.engine.conftest import assert_buckets_match, bucket_sums, seed, stored
from tests.servers import ROOT

DAY_S = 24 * HOUR_S


def totals(counters, ids, window="24h", **kw) -> dict[int, int]:
    return {i: counters.window_series("notes.hits", i, window, **kw).total for i in ids}


def test_a_bucketed_increment_adds_to_the_bucket_of_the_hour_it_was_accepted(counters, sql, r):
    (i,) = seed(sql, "notes", 1)
    pending = counters.keys.pending(counters.keys.shard_of(i))
    before = hour_of(int(time.time() * 1000))
    counters.incr("notes.hits", i, 3)
    after = hour_of(int(time.time() * 1000))
    counters.incr("items.hits", i, 1)  # a counter without buckets adds no bucket field
    names = {k.decode() for k in r.hkeys(pending)}
    buckets = {bucket_field(i, "nh", h) for h in (before, after)} & names
    assert len(buckets) == 1 and {f"{i}:nh", f"{i}:ih"} <= names
    assert int(r.hget(pending, buckets.pop())) == 3
    assert not any(n.startswith(f"{i}:ih@") for n in names)


def test_series_shape_and_live_views_before_and_after_the_flush(counters, sql):
    ids = seed(sql, "notes", 3)
    counters.incr_many([("notes.hits", i, 2 * i) for i in ids])
    counters.view("notes.hits", ids[0])
    s24, s7, s30 = (counters.window_series("notes.hits", ids[0], w) for w in ("24h", "7d", "30d"))
    assert (len(s24.buckets), len(s7.buckets), len(s30.buckets)) == (24, 168, 30)
    assert (s24.step, s7.step, s30.step) == ("hour", "hour", "day")
    for s in (s24, s7, s30):
        starts = [start for start, _ in s.buckets]
        assert starts == sorted(starts) and s.buckets[-1][1] == 3 and s.total == 3
    assert all(start.hour == 0 for start, _ in s30.buckets)
    live = totals(counters, ids, "7d")
    assert live == {ids[0]: 3, ids[1]: 4, ids[2]: 6}
    counters.flush_all()
    assert totals(counters, ids, "7d") == live
    assert totals(counters, ids, "30d") == live
    assert_buckets_match(sql)


def test_unknown_windows_counters_and_rows(counters, sql):
    (i,) = seed(sql, "notes", 1)
    with pytest.raises(UnknownWindow):
        counters.window_series("notes.hits", i, "1y")
    with pytest.raises(UnknownWindow):
        counters.trending("notes.hits", "30d")
    with pytest.raises(UnknownCounter):
        counters.window_series("items.hits", i, "24h")  # keeps no buckets
    assert counters.window_series("notes.hits", i + 1, "24h") is None
    assert counters.window_series("notes.hits", 2**63, "24h") is None


def test_deleted_rows_drop_their_buckets_with_their_deltas(counters, sql):
    ids = seed(sql, "notes", 3)
    counters.incr_many([("notes.hits", i, 5) for i in ids])
    with sql.begin() as conn:
        conn.execute(sa.text("DELETE FROM notes WHERE id = :i"), {"i": ids[1]})
    summary = counters.flush_all()
    assert summary.as_dict()["rows_missing"] == 1
    assert bucket_sums(sql, "notes", "hits") == {ids[0]: 5, ids[2]: 5}
    assert [i for i, _ in counters.trending("notes.hits", "24h")] == [ids[2], ids[0]]


def test_trending_ranks_stored_and_pending_views_then_newest(counters, sql):
    ids = seed(sql, "notes", 6)
    counters.incr_many([("notes.hits", ids[0], 5), ("notes.hits", ids[1], 9)])
    counters.incr_many([("notes.hits", ids[2], 5), ("notes.hits", ids[3], 1)])
    counters.flush_all()
    assert counters.trending("notes.hits", "24h") == [
        (ids[1], 9),
        (ids[2], 5),
        (ids[0], 5),
        (ids[3], 1),
    ]
    # pending views count at once: a row with nothing stored, and one overtaking
    counters.incr_many([("notes.hits", ids[4], 7), ("notes.hits", ids[3], 20)])
    live = [(ids[3], 21), (ids[1], 9), (ids[4], 7), (ids[2], 5), (ids[0], 5)]
    assert counters.trending("notes.hits", "7d") == live
    assert counters.trending("notes.hits", "24h", 2) == live[:2]
    counters.flush_all()
    assert counters.trending("notes.hits", "24h") == live
    assert counters.trending("notes.hits", "7d") == live
    with pytest.raises(UnknownCounter):
        counters.trending("items.hits", "24h")


def test_each_counted_row_keeps_its_trending_totals_in_one_row(counters, sql):
    ids = seed(sql, "notes", 4)
    counters.incr_many([("notes.hits", i, i) for i in ids])
    counters.flush_all()
    counters.incr_many([("notes.hits", i, 1) for i in ids])
    counters.flush_all()
    query = "SELECT row_id, n_24h, n_7d FROM counter_trending_totals ORDER BY row_id"
    with sql.connect() as conn:
        assert conn.execute(sa.text(query)).all() == [(i, i + 1, i + 1) for i in ids]


def test_the_schema_run_again_keeps_every_trending_total(counters, sql):
    ids = seed(sql, "notes", 5)
    counters.incr_many([("notes.hits", i, i) for i in ids])
    counters.flush_all()
    before = counters.trending("notes.hits", "7d")
    schema.create(sql)  # every step again: 0006 makes its old table anew, 0007 drops it
    assert (
        counters.trending("notes.hits", "7d")
        == before
        == sorted(((i, i) for i in ids), key=lambda p: (-p[1], -p[0]))
    )
    with sql.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('counter_window_totals')")).scalar() is None


# every stored trending total against the hourly buckets at or after its window's edge
TOTALS_AGAINST_BUCKETS = """
    WITH want AS (
        SELECT b.row_id,
               coalesce(sum(b.n) FILTER (WHERE b.hour >= d.edge), 0) AS n_24h,
               coalesce(sum(b.n) FILTER (WHERE b.hour >= w.edge), 0) AS n_7d
          FROM counter_hourly b
          JOIN counter_window_edges d ON (d.scope, d.tbl, d.col, d.win) =
               (b.scope, b.tbl, b.col, '24h')
          JOIN counter_window_edges w ON (w.scope, w.tbl, w.col, w.win) =
               (b.scope, b.tbl, b.col, '7d')
         GROUP BY b.row_id)
    SELECT coalesce(want.row_id, t.row_id), want.n_24h, want.n_7d, t.n_24h, t.n_7d
      FROM want FULL JOIN counter_trending_totals t ON t.row_id = want.row_id
     WHERE coalesce(want.n_24h, 0) <> coalesce(t.n_24h, 0)
        OR coalesce(want.n_7d, 0) <> coalesce(t.n_7d, 0)"""


def test_flushes_racing_retention_keep_every_total_equal_to_its_buckets(make_counters, sql):
    """Flushes add to a row's totals of both windows in one row while retention moves
    each window's edge past hours (the 24h one past the hour being counted): every
    total ends equal to the sum of its buckets inside its window."""
    ids = seed(sql, "notes", 40)
    flusher, mover = make_counters(), make_counters()
    flusher.incr_many([("notes.hits", i, 1) for i in ids])
    flusher.flush_all()
    now, errors = time.time(), []

    def flush() -> None:
        try:
            for k in range(40):
                flusher.incr_many([("notes.hits", i, 1 + k % 3) for i in ids[k % 4 :: 4]])
                flusher.flush_all()
        except Exception as exc:  # surfaced below
            errors.append(exc)

    t = threading.Thread(target=flush)
    t.start()
    for hours in range(0, 30, 2):  # edges move on to a day past the counted hour
        mover.retain(now=now + hours * HOUR_S)
    t.join(60)
    assert not errors and not t.is_alive()
    with sql.connect() as conn:
        assert conn.execute(sa.text(TOTALS_AGAINST_BUCKETS)).all() == []
        n_24h = conn.execute(sa.text("SELECT sum(n_24h) FROM counter_trending_totals")).scalar()
    assert_buckets_match(sql)
    assert n_24h == 0  # every counted hour has left the 24h window, none the 7d one
    assert sum(n for _, n in flusher.trending("notes.hits", "7d", 100)) == sum(
        stored(sql, "notes", "hits").values()
    )


def test_two_flushes_of_one_batch_write_its_buckets_once(make_counters, sql):
    ids = seed(sql, "notes", 10)
    numbered, go = threading.Event(), threading.Event()

    def hook(stage: str, shard: int) -> None:
        if stage == "numbered" and threading.current_thread().name == "first":
            numbered.set()
            go.wait(10)

    first, second = make_counters(shards=1, hook=hook), make_counters(shards=1)
    first.incr_many([("notes.hits", i, i) for i in ids])
    t = threading.Thread(target=first.flush_shard, args=(0,), name="first")
    t.start()
    assert numbered.wait(10)
    second.flush_shard(0)  # a redelivered flush resumes the same batch and seq
    go.set()
    t.join(10)
    assert stored(sql, "notes", "hits") == {i: i for i in ids}
    assert_buckets_match(sql)
    assert sum(n for _, n in first.trending("notes.hits", "24h", 100)) == sum(ids)


def test_retention_rolls_hours_into_days_and_windows_forward_exactly_once(counters, sql):
    ids = seed(sql, "notes", 12)
    counters.incr_many([("notes.hits", i, i) for i in ids])
    counters.flush_all()
    now = time.time()
    # a day later: the 24h window has let go of these hours, the 7d one has not
    later = counters.retain(now=now + DAY_S + HOUR_S)
    assert later.windows_moved["notes.hits/24h"] >= 1 and later.hours_rolled == 0
    assert counters.trending("notes.hits", "24h", now=now + DAY_S + HOUR_S) == []
    assert len(counters.trending("notes.hits", "7d", 100, now=now + DAY_S + HOUR_S)) == 12
    assert totals(counters, ids, "24h", now=now + DAY_S + HOUR_S) == dict.fromkeys(ids, 0)
    # three weeks later, twice: the hours are in their day, the sums unchanged
    for _ in range(2):
        counters.retain(now=now + 21 * DAY_S, chunk_rows=5)
        assert_buckets_match(sql)
        with sql.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM counter_hourly")).scalar() == 0
        assert counters.trending("notes.hits", "7d", now=now + 21 * DAY_S) == []
        assert totals(counters, ids, "30d", now=now + 21 * DAY_S) == {i: i for i in ids}
    # past the daily retention, days go
    counters.retain(now=now + 402 * DAY_S)
    assert bucket_sums(sql, "notes", "hits") == {}


@pytest.mark.parametrize("stage", ["windows@1", "hours@2"])
def test_retention_killed_midway_then_run_again_moves_every_bucket_once(
    stage, counters, sql, engine_db, victim_redis
):
    ids = seed(sql, "notes", 30)
    counters.incr_many([("notes.hits", i, i) for i in ids])
    counters.flush_all()
    at = time.time() + 21 * DAY_S
    args = [engine_db.url, victim_redis[0], str(counters.shards), stage, repr(at), "4"]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.engine.retention_victim", *args], cwd=ROOT, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    assert_buckets_match(sql)  # what the victim committed moved wholly
    with sql.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM counter_hourly")).scalar()
    assert 0 < left < 30 if stage.startswith("hours") else left == 30
    counters.retain(now=at, chunk_rows=4)
    counters.retain(now=at, chunk_rows=4)
    assert_buckets_match(sql)
    assert totals(counters, ids, "30d", now=at) == {i: i for i in ids}
    assert counters.trending("notes.hits", "7d", now=at) == []
