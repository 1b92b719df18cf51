"""Redis memory per pending counter: N counters (one delta each, default 100k) waiting in
the shards' pending hashes, for a few shard counts.

Per counter = the sum of ``MEMORY USAGE <key> SAMPLES 0`` over the pending hashes,
divided by N; ``used_memory`` growth is reported beside it (it includes allocator
slack). A hash stays a compact ``listpack`` while it holds at most
``hash-max-listpack-entries`` fields (Redis default 128; 512 here), so the shard count
decides the encoding: 100k counters / 16 shards = 6,250 fields per hash (hashtable),
/ 256 shards = 391 (listpack).
"""

from __future__ import annotations

from engine import Counter, Counters, Registry

DEFAULT_SHARD_COUNTS = (16, 64, 256, 1024)
LOAD_CHUNK = 10_000
PREFIX = "mem"


def measure(env, shards: int, pending: int, code: str) -> dict:
    r = env.redis()
    for key in r.scan_iter(f"{{{PREFIX}*"):
        r.delete(key)
    registry = Registry([Counter("posts", "view_count", code)])
    # no SQL is touched: the flush side of Counters is never called here
    counters = Counters(r, None, registry, shards=shards, scope=PREFIX)
    before = r.info("memory")["used_memory"]
    for start in range(1, pending + 1, LOAD_CHUNK):
        ids = range(start, min(start + LOAD_CHUNK, pending + 1))
        counters.incr_many(("posts.view_count", i, 1) for i in ids)
    after = r.info("memory")["used_memory"]
    shards_memory = counters.buffer_memory()
    usage = sum(m["bytes"] for m in shards_memory)
    encodings = sorted({m["encoding"] for m in shards_memory if m["encoding"]})
    fields = sum(m["fields"] for m in shards_memory)
    for key in r.scan_iter(f"{{{PREFIX}*"):
        r.delete(key)
    r.close()
    return {
        "shards": shards,
        "pending_counters": pending,
        "fields_per_shard": round(fields / shards),
        "encoding": encodings[0] if len(encodings) == 1 else encodings,
        "memory_usage_bytes": usage,
        "bytes_per_counter": round(usage / pending, 1),
        "used_memory_growth_per_counter": round((after - before) / pending, 1),
        "field_example": f"{pending}:{code}",
    }


def run(env, pending: int = 100_000, shard_counts=DEFAULT_SHARD_COUNTS, code="v", progress=None):
    rows = []
    for shards in shard_counts:
        row = measure(env, shards, pending, code)
        rows.append(row)
        if progress:
            progress.note(
                f"{shards:>5} shards: {row['bytes_per_counter']:6.1f} B/counter "
                f"({row['encoding']}, {row['fields_per_shard']} fields per hash)"
            )
    return {"pending_counters": pending, "by_shards": rows}
