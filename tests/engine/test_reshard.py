"""Changing the shard count: processes built with another count are refused, and
``Counters.reshard`` moves a live scope to a new count without losing or doubling a
delta, with traffic before, during and after."""

import random
import threading
from collections import Counter as Tally

import pytest

from engine import BufferUnavailable, Outcome
from tests.engine.conftest import seed, stored


def test_a_counters_built_with_another_shard_count_is_refused(make_counters, sql):
    four = make_counters(shards=4)
    assert four.check_layout() == 4
    eight = make_counters(shards=8)
    with pytest.raises(BufferUnavailable, match="4 shards"):
        eight.check_layout()


def test_an_increment_with_the_old_shard_count_is_refused_not_stranded(make_counters, sql, r):
    four, eight = make_counters(shards=4), make_counters(shards=8)
    (i,) = seed(sql, "items", 5)[-1:]  # id 5: shard 1 of 4, shard 5 of 8
    four.incr("items.hits", i, 1)  # the first increment of the scope records its layout
    refused = None
    try:
        eight.incr("items.hits", i, 10)  # a process that still counts with 8 shards
    except BufferUnavailable as exc:
        refused = exc
    four.flush_all()
    assert stored(sql, "items", "hits")[i] == 1
    assert r.exists(eight.keys.pending(5)) == 0  # nothing left where no flush looks
    assert refused is not None and "shard" in str(refused)


class Writers:
    """Threads adding views through whichever Counters is current, with exact books:
    acknowledged increments, and refusals (nothing written)."""

    def __init__(self, counters, ids) -> None:
        self.counters = counters
        self.ids = ids
        self.acked: Tally = Tally()
        self.refused = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(3)]

    def run(self, n: int) -> None:
        rnd = random.Random(n)
        while not self.stop.is_set():
            row = rnd.choice(self.ids)
            counters = self.counters
            try:
                counters.incr("items.hits", row, 1)
            except BufferUnavailable:
                with self.lock:
                    self.refused += 1
                continue
            with self.lock:
                self.acked[row] += 1

    def total(self) -> int:
        with self.lock:
            return sum(self.acked.values())

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def wait_for(ready) -> None:
    done = threading.Event()
    for _ in range(6000):
        if ready():
            return
        done.wait(0.01)
    raise AssertionError("no progress")


@pytest.mark.parametrize(("old", "new"), [(4, 8), (8, 3)])
def test_reshard_under_traffic_keeps_every_count_exact(old, new, make_counters, sql, r):
    ids = seed(sql, "items", 40)
    before = make_counters(shards=old)
    before.check_layout()
    before.existence.ensure_loaded(["items", "notes"])
    stale = make_counters(shards=old)  # a process that was not restarted
    with Writers(before, ids) as writers:
        wait_for(lambda: writers.total() >= 500)
        report = before.reshard(new)  # writers are refused while it drains
        after = make_counters(shards=new)
        assert after.check_layout() == new
        with pytest.raises(BufferUnavailable):
            before.check_layout()
        writers.counters = after
        seen = writers.total()
        wait_for(lambda: writers.total() >= seen + 500)
    assert report["from"] == old and report["to"] == new and report["index"]["items"] == 40
    with pytest.raises(BufferUnavailable):
        stale.incr("items.hits", ids[0], 1)
    assert after.buffer.dirty_shards()
    after.flush_all()
    after.flush_all()
    assert stored(sql, "items", "hits") == {i: writers.acked[i] for i in ids}
    assert after.read("items", ids) == {i: {"hits": writers.acked[i], "likes": 0} for i in ids}
    retired = range(new, max(old, new))  # shards the new layout no longer has: empty
    assert not any(r.exists(after.keys.pending(s), after.keys.inflight(s)) for s in retired)
    # the existence index was rebuilt for the new layout
    assert all(after.incr("items.hits", i, check_exists=True) is Outcome.COUNTED for i in ids)
    assert after.incr("items.hits", ids[-1] + 1, check_exists=True) is Outcome.MISSING
