"""The ledger's verdict on a batch's lineage, in Postgres, and the same rules in Python
(what live reads and reconcile use)."""

import pytest
import sqlalchemy as sa

from engine import lineage
from engine.lineage import MARK_APPLIED, Base, Ledger, fate, successor_fate

SCOPE = "lin"


def ledger_row(sql, ledger: Ledger | None) -> None:
    with sql.begin() as conn:
        conn.execute(sa.text("DELETE FROM counter_shards WHERE scope = :s"), {"s": SCOPE})
        if ledger is not None:
            conn.execute(
                sa.text(
                    "INSERT INTO counter_shards (scope, shard, applied_seq, gen, base_seq, "
                    "past_gens) VALUES (:s, 0, :a, :g, :b, CAST(:p AS text[]))"
                ),
                {
                    "s": SCOPE,
                    "a": ledger.applied_seq,
                    "g": ledger.gen,
                    "b": ledger.base_seq,
                    "p": "{" + ",".join(ledger.past_gens) + "}",
                },
            )


def mark(sql, seq: int, base: Base | None, mint: str | None = None, split: bool = False):
    params = {"scope": SCOPE, "shard": 0, "seq": seq, "mint": mint, "split": split}
    params |= {"bgen": base.gen if base else None, "bseq": base.seq if base else None}
    with sql.begin() as conn:
        row = conn.execute(MARK_APPLIED, params).first()
        after = conn.execute(
            sa.text(
                "SELECT applied_seq, gen, base_seq, past_gens FROM counter_shards WHERE scope = :s"
            ),
            {"s": SCOPE},
        ).one()
    return (tuple(row) if row else None), Ledger(after[0], after[1], after[2], tuple(after[3]))


G, W, P, M = "g1", "w2", "p0", "m9"
CASES = [
    # ledger before, batch seq, base, mint -> verdict, ledger gen after, past gens after
    (None, 7, Base(G, 0), None, lineage.APPLIED, G, ()),
    (Ledger(5, G, 4), 6, Base(G, 5), M, lineage.APPLIED, G, ()),
    (Ledger(5, G, 4), 6, Base(G, 9), None, lineage.APPLIED, G, ()),
    (Ledger(5, G, 4), 6, Base(G, 3), None, lineage.STALE, G, ()),
    # resumed, and the ledger's last batch had the same base: it was that very batch
    (Ledger(5, G, 3), 6, Base(G, 3), M, lineage.STALE, G, ()),
    # resumed, and later batches were applied: its successor cannot be trusted
    (Ledger(5, G, 4), 6, Base(G, 3), M, lineage.STALE, M, (G,)),
    (Ledger(5, G, 4, (P,)), 6, Base(P, 9), M, lineage.PAST, G, (P,)),
    (Ledger(5, G, 4, (P,)), 6, Base(W, 0), M, lineage.NEW_GEN, W, (G, P)),
    (Ledger(5, None, None), 6, Base(W, 0), None, lineage.NEW_GEN, W, ()),
    (Ledger(5, G, 4), 6, None, M, lineage.APPLIED, G, ()),
]


@pytest.mark.parametrize(("before", "seq", "base", "mint", "verdict", "gen", "past"), CASES)
def test_verdict_and_ledger_after(sql, before, seq, base, mint, verdict, gen, past):
    ledger_row(sql, before)
    row, after = mark(sql, seq, base, mint)
    assert row == (verdict, gen)
    assert (after.applied_seq, after.gen, after.past_gens) == (seq, gen, past)
    assert after.base_seq == (base.seq if base else None)
    assert fate(base, before) == verdict  # Python reads judge batches the same way


def test_a_stale_batch_split_off_a_larger_hash_always_mints(sql):
    # the rest of that hash may hold deltas of the batch the ledger applied last
    ledger_row(sql, Ledger(5, G, 3))
    assert mark(sql, 6, Base(G, 3), M, split=True)[0] == (lineage.STALE, M)


def test_a_seq_already_applied_returns_nothing_and_changes_nothing(sql):
    ledger_row(sql, Ledger(5, G, 4))
    assert mark(sql, 5, Base(G, 3), M) == (None, Ledger(5, G, 4))
    assert mark(sql, 4, Base(W, 0))[0] is None


def test_one_statement_for_many_shards_judges_each_batch_as_alone(sql):
    """MARK_APPLIED_MANY (a combined flush): every case above at once, one shard each,
    plus a split-off stale batch and a seq already applied."""
    cases = [(*case, False) for case in CASES]
    cases.append((Ledger(5, G, 3), 6, Base(G, 3), M, lineage.STALE, M, (G,), True))
    cases.append((Ledger(5, G, 4), 5, Base(G, 3), M, None, G, (), False))
    with sql.begin() as conn:
        conn.execute(sa.text("DELETE FROM counter_shards WHERE scope = :s"), {"s": SCOPE})
        for shard, (before, *_) in enumerate(cases):
            if before is not None:
                conn.execute(
                    sa.text(
                        "INSERT INTO counter_shards (scope, shard, applied_seq, gen, base_seq, "
                        "past_gens) VALUES (:s, :n, :a, :g, :b, CAST(:p AS text[]))"
                    ),
                    {"s": SCOPE, "n": shard, "a": before.applied_seq, "g": before.gen}
                    | {"b": before.base_seq, "p": "{" + ",".join(before.past_gens) + "}"},
                )
        params = {
            "scope": SCOPE,
            "shards": list(range(len(cases))),
            "seqs": [c[1] for c in cases],
            "bgens": [c[2].gen if c[2] else None for c in cases],
            "bseqs": [c[2].seq if c[2] else None for c in cases],
            "mints": [c[3] for c in cases],
            "splits": [c[7] for c in cases],
        }
        rows = {r[0]: (r[1], r[2]) for r in conn.execute(lineage.MARK_APPLIED_MANY, params)}
        after = {
            r[0]: (r[1], r[2], tuple(r[3]))
            for r in conn.execute(
                sa.text(
                    "SELECT shard, applied_seq, gen, past_gens FROM counter_shards WHERE scope = :s"
                ),
                {"s": SCOPE},
            )
        }
    for shard, (before, seq, _, _, verdict, gen, past, _) in enumerate(cases):
        if verdict is None:  # already applied: no row back, the ledger as it was
            assert shard not in rows
            assert after[shard] == (before.applied_seq, before.gen, before.past_gens)
        else:
            assert rows[shard] == (verdict, gen)
            assert after[shard] == (seq, gen, past)


def test_a_batch_without_a_seq_takes_a_fresh_one_in_the_same_statement(sql):
    """MARK_APPLIED_MANY with a NULL seq: the batch gets the next seq of counter_batch_seq,
    above every seq taken before, and RETURNING gives it back."""
    with sql.begin() as conn:
        taken = conn.execute(sa.text("SELECT nextval('counter_batch_seq')")).scalar()
    ledger_row(sql, Ledger(taken, G, taken - 1))
    params = {"scope": SCOPE, "shards": [0, 1], "seqs": [None, None]}
    params |= {"bgens": [G, None], "bseqs": [taken, None], "mints": [None, None]}
    params["splits"] = [False, False]
    with sql.begin() as conn:
        rows = {r[0]: tuple(r[1:]) for r in conn.execute(lineage.MARK_APPLIED_MANY, params)}
        after = dict(
            conn.execute(
                sa.text("SELECT shard, applied_seq FROM counter_shards WHERE scope = :s"),
                {"s": SCOPE},
            ).all()
        )
    fresh = {shard: row[2] for shard, row in rows.items()}
    assert sorted(fresh) == [0, 1] and min(fresh.values()) > taken
    assert len(set(fresh.values())) == 2
    assert rows[0][:2] == (lineage.APPLIED, G)
    assert after == fresh


def test_past_lineages_are_capped(sql):
    ledger_row(sql, None)
    for n in range(lineage.PAST_GENS + 5):
        mark(sql, n + 1, Base(f"gen{n}", 0))
    after = mark(sql, 100, Base("last", 0))[1]
    assert len(after.past_gens) == lineage.PAST_GENS
    assert after.past_gens[0] == f"gen{lineage.PAST_GENS + 4}"


def test_successor_of_an_unnumbered_batch_follows_it():
    ledger = Ledger(5, G, 3)
    assert successor_fate(Base(G, 5), ledger) == lineage.APPLIED  # not applied yet
    assert successor_fate(Base(G, 3), ledger) == lineage.APPLIED  # ahead = last applied
    assert successor_fate(Base(G, 2), ledger) == lineage.STALE
    assert successor_fate(Base(P, 2), Ledger(5, G, 3, (P,))) == lineage.PAST


def test_base_round_trips_through_its_redis_form():
    assert Base.parse(b"a1b2.17000001234:42") == Base("a1b2.17000001234", 42)
    assert str(Base("x", 7)) == "x:7" and Base.parse(None) is None
