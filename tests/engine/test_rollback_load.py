"""Redis loses its recent past under load: writers and flushers run while a real server is
SIGKILLed and started again from an older RDB dump, an older append-only file, or
nothing at all; then the traffic goes on.

The books must balance exactly: every delta the restarted Redis held (restored, or
accepted after the restart) is either applied once or dropped and reported, and no row
ends above the increments it was sent. Rows created after the checkpoint are never
reported missing.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter as Tally

import pytest
import sqlalchemy as sa

from engine import BufferUnavailable, CounterError, Counters, Outcome
from engine.buffer import CLAIM_MAX_FIELDS
from engine.keys import BUCKET_SEP
from harness.redis_server import RedisProcess
from tests.engine.conftest import REGISTRY, assert_buckets_match, seed, stored

SHARDS = 4
BATCH_DROPS = "discarded"  # ShardFlush: {field: delta} a flush dropped as already applied


class Traffic:
    """Writer and flusher threads on one Counters, with exact books of what was sent."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.acked: Tally = Tally()  # (table, id) -> increments acknowledged
        self.ambiguous: Tally = Tally()  # sent, but the reply never came (Redis died)
        self.viewed: Tally = Tally()  # outcomes of existence-checked increments
        self.summaries: list = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.stops: list[threading.Event] = []

    def _spawn(self, fn, *args) -> threading.Event:
        stop = threading.Event()
        t = threading.Thread(target=fn, args=(stop, *args), daemon=True)
        self.stops.append(stop)
        self.threads.append(t)
        t.start()
        return stop

    def writer(self, table: str, rows: list[int], seed_: int) -> threading.Event:
        def run(stop: threading.Event) -> None:
            rnd = random.Random(seed_)
            while not stop.is_set():
                row = rnd.choice(rows)
                try:
                    self.counters.incr(f"{table}.hits", row, 1)
                except BufferUnavailable:
                    with self.lock:
                        self.ambiguous[(table, row)] += 1
                    stop.wait(0.01)
                    continue
                with self.lock:
                    self.acked[(table, row)] += 1

        return self._spawn(run)

    def viewer(self, rows: list[int]) -> threading.Event:
        """Existence-checked views of rows that exist: none may come back as missing."""

        def run(stop: threading.Event) -> None:
            rnd = random.Random(99)
            while not stop.is_set():
                row = rnd.choice(rows)
                outcome = self.counters.bump_and_read("items.hits", row)[0]
                with self.lock:
                    self.viewed[outcome] += 1
                    if outcome is Outcome.COUNTED:
                        self.acked[("items", row)] += 1

        return self._spawn(run)

    def flusher(self) -> threading.Event:
        def run(stop: threading.Event) -> None:
            while not stop.is_set():
                try:
                    summary = self.counters.flush_all()
                except CounterError as exc:
                    summary = getattr(exc, "summary", None)
                    stop.wait(0.01)
                with self.lock:
                    if summary is not None:
                        self.summaries.append(summary)

        return self._spawn(run)

    def total(self, table: str) -> int:
        with self.lock:
            return sum(n for (t, _), n in self.acked.items() if t == table)

    def stop_all(self) -> None:
        for stop in self.stops:
            stop.set()
        for t in self.threads:
            t.join(30)
        self.threads, self.stops = [], []

    def dropped(self) -> Tally:
        """(table, id) -> sum of the deltas flushes dropped as already applied."""
        out: Tally = Tally()
        for summary in self.summaries:
            for shard in summary.shards:
                for name, delta in getattr(shard, BATCH_DROPS, {}).items():
                    if BUCKET_SEP in name:
                        continue  # a bucket's delta: its counter's is counted
                    row, code = name.split(":")
                    out[(REGISTRY.by_code(code).table, int(row))] += delta
        return out


def wait_for(what: str, ready, timeout_s: float = 60.0) -> None:
    """Wait for progress (a guard against hanging, not a measurement)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def values(sql) -> Tally:
    out: Tally = Tally()
    for table in ("items", "notes"):
        for row, v in stored(sql, table, "hits").items():
            out[(table, row)] = v
    return out


def restored(client, keys, sql) -> Tally:
    """(table, id) -> deltas the restarted Redis holds (pending, and inflight unless its
    seq shows Postgres committed it: the flush only releases those)."""
    with sql.connect() as conn:
        ledger = dict(conn.execute(sa.text("SELECT shard, applied_seq FROM counter_shards")).all())
    out: Tally = Tally()
    for s in range(keys.shards):
        seq = client.hget(keys.batch(s), "seq")
        held = [keys.pending(s)]
        if seq is None or int(seq) > ledger.get(s, 0):
            held.append(keys.inflight(s))
        for key in held:
            for name, delta in client.hgetall(key).items():
                name = name.decode()
                if not name.startswith("_") and BUCKET_SEP not in name:
                    row, code = name.split(":")
                    out[(REGISTRY.by_code(code).table, int(row))] += int(delta)
    return out


@pytest.fixture(params=["rdb", "aof", "wipe"])
def server(request, tmp_path):
    if request.param == "aof":
        proc = RedisProcess.aof(tmp_path / "redis")
    else:
        proc = RedisProcess.rdb(tmp_path / "redis")
    proc.mode = request.param
    proc.start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("max_fields", [CLAIM_MAX_FIELDS, 5], ids=["whole", "bounded"])
def test_redis_restarted_older_than_postgres_under_load_never_applies_twice(
    max_fields, server, sql
):
    def make() -> Counters:
        return Counters(
            server.client(),
            sql,
            REGISTRY,
            shards=SHARDS,
            flush_lock_ttl_ms=300,
            claim_max_fields=max_fields,  # 5: most claims split a shard's pending hash
        )

    counters = make()
    items, notes = seed(sql, "items", 24), seed(sql, "notes", 8)
    counters.existence.ensure_loaded(["items", "notes"])

    # before: items and notes written and flushed all along; a checkpoint mid-way
    before = Traffic(counters)
    items_writers = [before.writer("items", items, n) for n in range(2)]
    before.writer("notes", notes, 7)
    before.flusher()
    before.flusher()
    wait_for("items traffic", lambda: before.total("items") >= 1000)
    server.checkpoint()
    late = seed(sql, "items", 4)  # rows the checkpoint's existence index lacks
    counters.existence.mark("items", late)
    items_writers.append(before.writer("items", late, 5))
    wait_for("more items traffic", lambda: before.total("items") >= 3000)
    # every acknowledged item increment reaches Postgres, so whatever item deltas the
    # checkpoint held are already applied; notes keep flowing while Redis dies
    for stop in items_writers:
        stop.set()
    wait_for(
        "items flushed",
        lambda: all(values(sql)[("items", i)] == before.acked[("items", i)] for i in items + late),
    )
    server.kill()
    before.stop_all()
    at_crash = values(sql)

    client = {"rdb": server.rollback, "aof": server.rollback, "wipe": server.wipe}[server.mode]()
    held = restored(client, counters.keys, sql)
    if server.mode != "wipe":
        assert sum(n for (t, _), n in held.items() if t == "items") > 0, "nothing to replay"

    # after: the same traffic again, with views of the rows created after the checkpoint
    counters = make()
    if server.mode == "wipe":
        counters.ensure_index()
    after = Traffic(counters)
    for n in range(2):
        after.writer("items", items + late, 10 + n)
    after.writer("notes", notes, 17)
    after.viewer(late)
    after.flusher()
    after.flusher()
    wait_for("traffic after the restart", lambda: after.total("items") >= 3000)
    after.stop_all()
    for _ in range(3):
        after.summaries.append(counters.flush_all())
    assert counters.buffer.dirty_shards() == []

    final, dropped = values(sql), after.dropped()
    for key in final:
        # every delta the restarted Redis held is applied once or dropped and reported
        assert final[key] == at_crash[key] + held[key] + after.acked[key] - dropped[key], key
        # never more than was sent
        sent = before.acked[key] + before.ambiguous[key] + after.acked[key]
        assert final[key] <= sent, key
        if key[0] == "items":  # nothing of these was lost at the crash
            assert final[key] == sent - (dropped[key] - held[key]), key
    assert after.viewed[Outcome.MISSING] == 0 and after.viewed[Outcome.COUNTED] > 0
    if server.mode == "wipe":
        assert sum(dropped.values()) == 0
    assert_buckets_match(sql)  # notes' hourly buckets went (or were dropped) with them
