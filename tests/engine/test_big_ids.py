"""Rows with ids of any bigint size: beyond what an existence bitmap can address
(id // shards + 1 > 2**32 - 1) the index keeps a set of ids, checked by the same script."""

import sqlalchemy as sa

from engine import Outcome
from tests.engine.conftest import seed, stored

BIG = [2**63 - 1, 2**63 - 2, 2**62 + 3, 10**13, 10**13 + 7]
ABSENT = [2**63 - 3, 10**13 + 1, 2**40]


def insert(sql, ids) -> None:
    with sql.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO items (id) SELECT unnest(CAST(:ids AS bigint[]))"),
            {"ids": "{" + ",".join(map(str, ids)) + "}"},
        )


def test_every_path_finds_rows_with_huge_ids_and_refuses_absent_ones(make_counters, sql, r):
    counters = make_counters(shards=4)
    (dense,) = seed(sql, "items", 1)
    insert(sql, BIG)
    assert counters.existence.ensure_loaded(["items", "notes"])["items"] == 1 + len(BIG)
    rows = [dense, *BIG]
    assert [counters.incr("items.hits", i, 1, check_exists=True) for i in rows] == [
        Outcome.COUNTED
    ] * len(rows)
    assert counters.incr_checked([("items.hits", i, 1) for i in rows]) == [Outcome.COUNTED] * len(
        rows
    )
    assert all(counters.view("items.hits", i, 1) for i in rows)
    for i in rows:
        outcome, counts, _ = counters.bump_and_read("items.hits", i)
        assert outcome is Outcome.COUNTED and counts["hits"] == 4
    keys = set(r.keys())
    for i in ABSENT:
        assert counters.incr("items.hits", i, 1, check_exists=True) is Outcome.MISSING
        assert counters.view("items.hits", i, 1) is False
        assert counters.bump_and_read("items.hits", i)[0] is Outcome.MISSING
    assert counters.incr_checked([("items.hits", i, 1) for i in ABSENT]) == [Outcome.MISSING] * 3
    assert set(r.keys()) == keys  # an absent id leaves nothing behind
    counters.existence.unmark("items", [BIG[0]])
    assert counters.incr("items.hits", BIG[0], 1, check_exists=True) is Outcome.MISSING
    assert counters.read("items", rows) == {i: {"hits": 4, "likes": 0} for i in rows}
    counters.flush_all()
    assert stored(sql, "items", "hits") == {i: 4 for i in rows}
    counters.existence.mark("items", [BIG[0]])
    assert counters.incr("items.hits", BIG[0], 1, check_exists=True) is Outcome.COUNTED


def test_a_rebuilt_index_holds_huge_ids_too(make_counters, sql):
    counters = make_counters(shards=3)
    insert(sql, BIG)
    counters.ensure_index()
    assert counters.rebuild_index("items") == len(BIG)
    assert all(counters.incr("items.hits", i, check_exists=True) is Outcome.COUNTED for i in BIG)
    counters.flush_all()
    assert stored(sql, "items", "hits") == {i: 1 for i in BIG}
