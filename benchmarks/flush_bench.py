"""Flush cost: ``Counters.flush_all()`` against one raw ``UPDATE … FROM unnest`` of the
same rows and deltas, in the same run, on the same table.

* N dirty counters (1k, 10k, 100k), one delta each, spread over the default 16 shards.
  A small flush (at most ``flush_combined.COMBINE_MAX_FIELDS`` fields in all) claims
  every shard in one Redis round trip and applies every batch in ONE transaction (a
  ledger upsert per shard + one ``UPDATE … FROM unnest`` for all), then releases them
  all in one round trip; a larger one runs per shard one such transaction, two shards
  at a time. Each size is also flushed the per-shard way (``combine_max_fields=0``,
  what every flush did before), two shards and one shard at a time, in the same run.
* The raw baseline is what a flush could not beat: one statement with the same two
  arrays, one transaction, no Redis, no ledger.
* 1M increments on 1k counters (each one a separate engine increment, pipelined
  into Redis) against 1k increments on the same 1k counters: the flush cost should
  follow the number of distinct counters, not of increments (contract G7).

Every measurement runs ``reps`` times (1k counters ten times as often, 10k three times:
``MORE_REPS``), raw and flush taking turns at going first, with a ``VACUUM`` of the
table before each; the median is reported.
"""

from __future__ import annotations

import random
import statistics
import threading
import time

import sqlalchemy as sa

from engine import COMBINE_MAX_FIELDS, Counter, Counters, Registry, schema
from engine.settings import FLUSH_THREADS
from engine.sqlarrays import int_array

TABLE = "bench_posts"
CODE = "v"
NAME = f"{TABLE}.view_count"
SHARDS = 16
LOAD_CHUNK = 10_000  # increments per pipelined round trip when filling Redis
# A flush of a few ms swings by half between runs on a busy machine; smaller sizes run
# more times: {size up to: times as often as ``reps``}
MORE_REPS = {1_000: 10, 10_000: 3}


def times(n: int, reps: int) -> int:
    """How many times a flush of ``n`` counters is measured."""
    return reps * next((k for size, k in MORE_REPS.items() if n <= size), 1)


DDL = f"""CREATE TABLE {TABLE} (
    id bigint PRIMARY KEY,
    title varchar(200) NOT NULL,
    content text NOT NULL,
    author_id bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    view_count bigint NOT NULL DEFAULT 0,
    likes_count bigint NOT NULL DEFAULT 0,
    collects_count bigint NOT NULL DEFAULT 0,
    shares_count bigint NOT NULL DEFAULT 0,
    comments_count bigint NOT NULL DEFAULT 0
)"""

RAW_UPDATE = sa.text(
    f"""UPDATE {TABLE} t SET view_count = t.view_count + d.delta
    FROM unnest(CAST(:ids AS bigint[]), CAST(:deltas AS bigint[])) AS d(id, delta)
    WHERE t.id = d.id"""
)


def setup(sql: sa.Engine, rows: int) -> None:
    schema.create(sql)
    with sql.begin() as conn:
        conn.execute(sa.text(DDL))
        conn.execute(
            sa.text(
                f"INSERT INTO {TABLE} (id, title, content, author_id) "
                "SELECT g, 'post ' || g, repeat('lorem ipsum ', 20), 1 "
                "FROM generate_series(1, :n) g"
            ),
            {"n": rows},
        )
    vacuum(sql, analyze=True)


def vacuum(sql: sa.Engine, analyze: bool = False) -> None:
    with sql.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"VACUUM {'ANALYZE ' if analyze else ''}{TABLE}"))


def total_views(sql: sa.Engine) -> int:
    with sql.connect() as conn:
        query = sa.text(f"SELECT coalesce(sum(view_count), 0)::bigint FROM {TABLE}")
        return int(conn.execute(query).scalar())


def raw_update(sql: sa.Engine, ids: list[int], deltas: list[int]) -> float:
    t0 = time.perf_counter()
    with sql.begin() as conn:
        conn.execute(RAW_UPDATE, {"ids": int_array(ids), "deltas": int_array(deltas)})
    return time.perf_counter() - t0


def load(counters: Counters, increments) -> float:
    """Add each ``(id, delta)`` as its own engine increment, pipelined; returns seconds."""
    t0 = time.perf_counter()
    chunk: list = []
    for row_id, delta in increments:
        chunk.append((NAME, row_id, delta))
        if len(chunk) >= LOAD_CHUNK:
            counters.incr_many(chunk)
            chunk = []
    if chunk:
        counters.incr_many(chunk)
    return time.perf_counter() - t0


class StageClock:
    """Splits a flush_all() by the engine's stage hook: ``until_<stage>`` is the time from
    the previous stage to that one in the same flushing thread, summed over shards and
    threads (``until_claimed`` includes that thread's previous release), so with
    several threads the parts add up to more than the wall time; ``after_<stage>`` is
    each thread's tail after its last stage. The hook only appends (thread, stage, time):
    the sums are made after the flush, so the clock adds next to nothing to what it
    measures."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.perf_counter()
        self.events: list[tuple[int, str, float]] = []  # list.append is atomic

    def __call__(self, stage: str, shard: int) -> None:
        self.events.append((threading.get_ident(), stage, time.perf_counter()))

    def finish(self, total_s: float) -> dict:
        split: dict[str, float] = {}
        last: dict[int, tuple[float, str | None]] = {}  # thread -> (time, stage) of last hook
        for thread, stage, at in self.events:
            since, _ = last.get(thread, (self.started, None))
            key = f"until_{stage}_s"
            split[key] = split.get(key, 0.0) + at - since
            last[thread] = (at, stage)
        end = self.started + total_s
        for at, stage in last.values():
            key = f"after_{stage}_s"
            split[key] = split.get(key, 0.0) + max(0.0, end - at)
        return {k: round(v, 6) for k, v in split.items()}


def timed_flush(counters: Counters, clock: StageClock, expect: int) -> tuple[float, dict]:
    clock.reset()
    t0 = time.perf_counter()
    summary = counters.flush_all()
    took = time.perf_counter() - t0
    if summary.counters != expect or summary.errors:
        raise RuntimeError(f"flush applied {summary.counters} counters, expected {expect}")
    return took, clock.finish(took)


def run(
    env,
    sizes=(1_000, 10_000, 100_000),
    reps: int = 3,
    big=(1_000_000, 1_000),
    big_reps: int = 5,
    progress=None,
):
    """Returns the ``flush`` section of the results."""
    sql = env.sql(pool_size=2)
    r = env.redis()
    rng = random.Random(7)
    clock = StageClock()
    registry = Registry([Counter(TABLE, "view_count", CODE)])
    counters = Counters(r, sql, registry, shards=SHARDS, scope="fb", hook=clock)
    # the per-shard way every flush took before small ones went in one transaction
    apart = Counters(r, sql, registry, shards=SHARDS, scope="fb2", combine_max_fields=0)
    serial = Counters(
        r, sql, registry, shards=SHARDS, scope="fb1", flush_threads=1, combine_max_fields=0
    )
    setup(sql, max(max(sizes), big[1]))
    expected_total = 0
    out: dict = {
        "shards": SHARDS,
        "flush_threads": FLUSH_THREADS,
        "combine_max_fields": COMBINE_MAX_FIELDS,
        "reps": reps,
        "reps_by_size": {str(n): times(n, reps) for n in sizes},
        "table_rows": max(max(sizes), big[1]),
        "sizes": {},
    }

    for n in sizes:
        raw_s, flush_s, serial_s, apart_s, splits = [], [], [], [], []
        ids = list(range(1, n + 1))
        # a few ms each: more repetitions keep one noisy moment of the machine from
        # moving the median
        for rep in range(times(n, reps)):
            deltas = [rng.randint(1, 3) for _ in ids]
            order = ["raw", "flush", "serial", "apart"]
            for what in order[rep % 4 :] + order[: rep % 4]:
                vacuum(sql)
                if what == "raw":
                    raw_s.append(raw_update(sql, ids, deltas))
                elif what == "flush":
                    load(counters, zip(ids, deltas, strict=True))
                    took, split = timed_flush(counters, clock, n)
                    flush_s.append(took)
                    splits.append(split)
                elif what == "apart":
                    load(apart, zip(ids, deltas, strict=True))
                    apart_s.append(timed_flush(apart, clock, n)[0])
                else:
                    load(serial, zip(ids, deltas, strict=True))
                    serial_s.append(timed_flush(serial, clock, n)[0])
                expected_total += sum(deltas)
        raw_med, flush_med = statistics.median(raw_s), statistics.median(flush_s)
        serial_med, apart_med = statistics.median(serial_s), statistics.median(apart_s)
        out["sizes"][str(n)] = {
            "counters": n,
            "raw_unnest_s": round(raw_med, 6),
            "flush_s": round(flush_med, 6),
            "ratio": round(flush_med / raw_med, 3),
            "flush_counters_per_s": round(n / flush_med),
            "flush_1_thread_s": round(serial_med, 6),
            "ratio_1_thread": round(serial_med / raw_med, 3),
            "flush_per_shard_s": round(apart_med, 6),
            "ratio_per_shard": round(apart_med / raw_med, 3),
            "flush_split": min(splits, key=lambda s: sum(s.values())),
            "raw_runs_s": [round(x, 6) for x in raw_s],
            "flush_runs_s": [round(x, 6) for x in flush_s],
            "flush_1_thread_runs_s": [round(x, 6) for x in serial_s],
            "flush_per_shard_runs_s": [round(x, 6) for x in apart_s],
        }
        if progress:
            progress.note(
                f"{n:>7} counters: flush {flush_med * 1000:8.1f} ms, "
                f"raw unnest {raw_med * 1000:8.1f} ms, ratio {flush_med / raw_med:.2f} "
                f"(1 thread: {serial_med / raw_med:.2f}, per shard: {apart_med / raw_med:.2f})"
            )

    increments, distinct = big
    few_s, many_s, load_s = [], [], []
    ids = list(range(1, distinct + 1))
    per_counter = increments // distinct
    # two flushes of ~10 ms each: three samples left the ratio at the scheduler's mercy
    for _ in range(big_reps):
        vacuum(sql)
        load(counters, ((i, 1) for i in ids))
        few_s.append(timed_flush(counters, clock, distinct)[0])
        expected_total += distinct
        vacuum(sql)
        # interleave ids so each shard's hash sees its counters bumped over and over
        load_s.append(load(counters, ((i, 1) for _ in range(per_counter) for i in ids)))
        many_s.append(timed_flush(counters, clock, distinct)[0])
        expected_total += per_counter * distinct
    few, many = statistics.median(few_s), statistics.median(many_s)
    out["increments"] = {
        "distinct_counters": distinct,
        "increments": per_counter * distinct,
        "flush_1_per_counter_s": round(few, 6),
        "flush_many_per_counter_s": round(many, 6),
        "ratio": round(many / few, 3),
        "reps": big_reps,
        "load_increments_per_s": round(per_counter * distinct / statistics.median(load_s)),
        "runs_1_per_counter_s": [round(x, 6) for x in few_s],
        "runs_many_per_counter_s": [round(x, 6) for x in many_s],
    }
    if progress:
        progress.note(
            f"{per_counter * distinct} increments on {distinct} counters: flush "
            f"{many * 1000:.1f} ms vs {few * 1000:.1f} ms for {distinct} increments "
            f"(ratio {many / few:.2f})"
        )

    got = total_views(sql)
    if got != expected_total:
        raise RuntimeError(f"Postgres holds {got} views, expected {expected_total}")
    out["verified_total_views"] = got
    with sql.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {TABLE}"))
        conn.execute(sa.text("DELETE FROM counter_shards"))
    for key in r.scan_iter("{fb*"):  # every scope: fb, fb1, fb2
        r.delete(key)
    r.close()
    sql.dispose()
    return out
