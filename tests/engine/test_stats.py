"""Shared flush/reconcile totals in Redis, readable by any process."""

import sqlalchemy as sa

from tests.engine.conftest import seed


def test_flush_and_reconcile_totals_are_shared_through_redis(make_counters, sql):
    writer, other_process = make_counters(shards=2), make_counters(shards=2)
    a, b, c = seed(sql, "items", 3)
    writer.incr_many([("items.hits", a, 1), ("items.hits", b, 2), ("items.likes", c, 5)])
    writer.incr("items.hits", a, 1)
    with sql.begin() as conn:
        conn.execute(sa.text("DELETE FROM items WHERE id = :b"), {"b": b})
    writer.flush_all()
    writer.reconcile()
    snap = other_process.stats.snapshot()
    totals = snap["totals"]
    assert totals["flushes"] == 1 and totals["batches"] == 2
    assert totals["counters_applied"] == 3 and totals["rows_missing"] == 1
    assert totals["reconciles"] == 1 and totals["reconcile_fixed"] == 1  # c had no like rows
    assert totals["reconcile_drift_abs"] == 5
    assert snap["accepted"] == {"ih": 3, "il": 1}
    assert snap["flush_buckets"][-1] == ("inf", 2)
    assert snap["last_flush"]["flushed"] == 3 and snap["last_reconcile"]["fixed"] == 1
