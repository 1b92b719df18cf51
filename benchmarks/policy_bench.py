"""The view policy's Redis costs (engine/policy.py): memory per remembered (visitor, row)
pair, and the unique-viewer estimate's error, each at 1k, 100k and 1M.

Memory: N distinct visitors each view one of 1,000 rows once, through the policy's own
increment script, into the benchmark's Redis db (empty at the start). Per pair = the sum
of ``MEMORY USAGE <key> SAMPLES 0`` over the dedupe sets (``*:seen:*``) divided by N;
``used_memory`` growth per pair is given beside it (it includes the HyperLogLogs, the
pending hash and allocator slack). The sets are intsets of 32-bit members while they
hold at most ``set-max-intset-entries`` (512 by default) members each.

Error: N distinct visitors, one view each, of one row; the row's ``PFCOUNT`` against N.
"""

from __future__ import annotations

from engine import Counter, Counters, Registry, ViewPolicy, Visit

DEFAULT_SIZES = (1_000, 100_000, 1_000_000)
ROWS = 1_000  # rows the memory run's views are spread over
BATCH = 2_000  # views per pipelined round trip while loading
PREFIX = "pol"
WINDOW_S = 3600


def _registry() -> Registry:
    return Registry(
        [
            Counter("posts", "view_count", "pv", policy=ViewPolicy(bots=None, uniques="u")),
        ]
    )


def _clear(r) -> None:
    for key in r.scan_iter(f"{{{PREFIX}*", count=10_000):
        r.delete(key)


def _load(counters: Counters, views) -> None:
    """Count ``(row, visitor)`` views under the policy, BATCH per round trip."""
    batch = []
    for row_id, visitor in views:
        batch.append(("posts.view_count", row_id, Visit(visitor)))
        if len(batch) == BATCH:
            counters.view_many(batch)
            batch = []
    if batch:
        counters.view_many(batch)


def _counters(r, shards: int) -> Counters:
    # no SQL is touched: only the increment side of Counters is used here
    return Counters(r, None, _registry(), shards=shards, scope=PREFIX, view_window_s=WINDOW_S)


def memory(env, pairs: int, shards: int = 16) -> dict:
    r = env.redis()
    _clear(r)
    counters = _counters(r, shards)
    before = r.info("memory")["used_memory"]
    _load(counters, ((1 + i % ROWS, f"c:visitor-{i}") for i in range(pairs)))
    after = r.info("memory")["used_memory"]
    usage, sets, members, encodings = 0, 0, 0, set()
    keys = list(r.scan_iter(f"{{{PREFIX}:*:seen:*", count=10_000))
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
        pipe.object("encoding", key)
        pipe.scard(key)
    replies = pipe.execute()
    for i in range(len(keys)):
        size, encoding, n = replies[3 * i : 3 * i + 3]
        usage += size or 0
        members += n
        sets += 1
        encodings.add(encoding.decode() if isinstance(encoding, bytes) else encoding)
    _clear(r)
    r.close()
    return {
        "pairs": pairs,
        "remembered": members,
        "sets": sets,
        "members_per_set": round(members / max(sets, 1), 1),
        "encoding": sorted(encodings),
        "memory_usage_bytes": usage,
        "bytes_per_pair": round(usage / pairs, 2),
        "used_memory_growth_per_pair": round((after - before) / pairs, 2),
    }


def hll_error(env, visitors: int, shards: int = 16) -> dict:
    r = env.redis()
    _clear(r)
    counters = _counters(r, shards)
    row = 7
    _load(counters, ((row, f"c:visitor-{i}") for i in range(visitors)))
    estimate = r.pfcount(counters.keys.uniques(row, "pv"))
    hll_bytes = r.memory_usage(counters.keys.uniques(row, "pv"), samples=0)
    _clear(r)
    r.close()
    return {
        "visitors": visitors,
        "estimate": estimate,
        "error": round((estimate - visitors) / visitors, 5),
        "hll_bytes": hll_bytes,
    }


def run(env, sizes=DEFAULT_SIZES, progress=None) -> dict:
    r = env.redis()
    buckets = _counters(r, 16).dedupe_buckets  # the engine's default
    r.close()
    out = {"dedupe_buckets": buckets, "window_s": WINDOW_S, "memory": [], "hll": []}
    for n in sizes:
        row = memory(env, n)
        out["memory"].append(row)
        err = hll_error(env, n)
        out["hll"].append(err)
        if progress:
            progress.note(
                f"{n:>9,} pairs: {row['bytes_per_pair']:5.2f} B/pair in the dedupe sets "
                f"({row['members_per_set']} per set, {'/'.join(row['encoding'])}), used_memory "
                f"+{row['used_memory_growth_per_pair']} B/pair; unique viewers "
                f"{err['estimate']:,} for {n:,} ({err['error']:+.2%})"
            )
    return out
