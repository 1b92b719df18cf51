"""Exact recount alongside pending deltas and concurrent writers."""

import random
import threading

import sqlalchemy as sa

from engine.reconcile import lock_target
from tests.engine.conftest import seed, stored


def like(counters, sql, item: int, user: int) -> None:
    """The writer protocol: lock the target, change the source row, add the delta, commit."""
    with sql.begin() as conn:
        assert lock_target(conn, "items", item)
        row = conn.execute(
            sa.text(
                "INSERT INTO item_likes (item_id, user_id) VALUES (:i, :u) "
                "ON CONFLICT DO NOTHING RETURNING id"
            ),
            {"i": item, "u": user},
        ).first()
        if row:
            counters.incr("items.likes", item, 1)


def unlike(counters, sql, item: int, user: int) -> None:
    with sql.begin() as conn:
        assert lock_target(conn, "items", item)
        row = conn.execute(
            sa.text("DELETE FROM item_likes WHERE item_id = :i AND user_id = :u RETURNING id"),
            {"i": item, "u": user},
        ).first()
        if row:
            counters.incr("items.likes", item, -1)


def truth(sql) -> dict[int, int]:
    with sql.connect() as conn:
        return dict(
            conn.execute(
                sa.text(
                    "SELECT i.id, count(l.id) FROM items i LEFT JOIN item_likes l "
                    "ON l.item_id = i.id GROUP BY i.id"
                )
            ).all()
        )


def test_reconcile_with_pending_deltas_fixes_nothing(counters, sql):
    ids = seed(sql, "items", 5)
    for u in range(3):
        like(counters, sql, ids[0], u)
    like(counters, sql, ids[1], 1)
    result = counters.reconcile()
    assert result.checked == 5 and result.fixes == []
    counters.flush_all()
    assert stored(sql, "items", "likes") == truth(sql)


def test_reconcile_repairs_drift_and_reports_it(counters, sql, r):
    a, b = seed(sql, "items", 2)
    like(counters, sql, a, 1)
    like(counters, sql, a, 2)
    r.flushdb()  # the deltas are lost, as after a Redis restart
    with sql.begin() as conn:
        conn.execute(sa.text("UPDATE items SET likes = 7 WHERE id = :b"), {"b": b})
    result = counters.reconcile(ids=[a, b])
    assert {(f.id, f.counter, f.was, f.now) for f in result.fixes} == {
        (a, "likes", 0, 2),
        (b, "likes", 7, 0),
    }
    assert stored(sql, "items", "likes") == {a: 2, b: 0}
    assert counters.reconcile().fixes == []


def test_reconcile_counts_an_inflight_batch_once_whichever_side_of_commit(counters, sql):
    (i,) = seed(sql, "items", 1)
    like(counters, sql, i, 1)
    shard = counters.keys.shard_of(i)
    claim = counters.buffer.claim(shard, "t1")
    assert counters.reconcile().fixes == []  # inflight, not numbered
    seq = counters.buffer.assign_seq(shard, claim.token, 10**12)
    assert counters.reconcile().fixes == []  # inflight, numbered, not applied
    done = counters.flush_all()
    assert done.shards[0].seq == seq
    counters.buffer.redis.hset(counters.keys.inflight(shard), f"{i}:il", 1)
    counters.buffer.redis.hset(counters.keys.batch(shard), mapping={"token": "t1", "seq": seq})
    assert counters.reconcile().fixes == []  # applied but not yet released
    assert stored(sql, "items", "likes") == {i: 1}


def test_reconcile_while_threads_like_unlike_and_flush_is_exact_after_quiescence(
    make_counters, sql
):
    counters = make_counters(shards=4, flush_threads=4)  # every shard's flush at once
    items = seed(sql, "items", 12)
    stop = threading.Event()
    errors = []  # a deadlock between a flush and a reconcile would land here

    def writer(n: int) -> None:
        rnd = random.Random(n)
        for _ in range(150):
            item, user = rnd.choice(items), rnd.randint(1, 6)
            (like if rnd.random() < 0.6 else unlike)(counters, sql, item, user)

    def background(fn) -> None:
        while not stop.is_set():
            try:
                fn()
            except Exception as exc:
                errors.append(exc)
                raise

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    others = [
        threading.Thread(target=background, args=(counters.reconcile,)),
        threading.Thread(target=background, args=(lambda: counters.reconcile(ids=items[:4]),)),
        threading.Thread(target=background, args=(counters.flush_all,)),
    ]
    for t in writers + others:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in others:
        t.join()
    assert errors == []
    live = counters.read("items", items)
    assert {i: live[i]["likes"] for i in items} == truth(sql)
    counters.flush_all()
    assert counters.reconcile().fixes == []
    assert stored(sql, "items", "likes") == truth(sql)
