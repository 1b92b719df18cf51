"""Redis memory per pending counter, and per row of the read model.

Pending counters: N counters (one delta each, default 100k) waiting in
the shards' pending hashes, for a few shard counts.

Per counter = the sum of ``MEMORY USAGE <key> SAMPLES 0`` over the pending hashes,
divided by N; ``used_memory`` growth is reported beside it (it includes allocator
slack). A hash stays a compact ``listpack`` while it holds at most
``hash-max-listpack-entries`` fields (Redis default 128; 512 here), so the shard count
decides the encoding: 100k counters / 16 shards = 6,250 fields per hash (hashtable),
/ 256 shards = 391 (listpack).

Read model (engine/readmodel.py): R rows (default 1M; at most 200k page rows) filled by
the engine's own fill script, once with the counters only (what ``counters.read`` keeps)
and once as the site's page keeps a post: its six counters, the unique-viewer estimate,
author, creation time, a 60-character title and a body of ``content_bytes``. Per row =
``used_memory`` growth / R (the keys, their TTLs and the allocator's slack), with
``MEMORY USAGE`` of a sample beside it.
"""

from __future__ import annotations

import datetime as dt

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


def run(
    env,
    pending: int = 100_000,
    shard_counts=DEFAULT_SHARD_COUNTS,
    code="v",
    progress=None,
    read_model_rows: int = 1_000_000,
):
    rows = []
    for shards in shard_counts:
        row = measure(env, shards, pending, code)
        rows.append(row)
        if progress:
            progress.note(
                f"{shards:>5} shards: {row['bytes_per_counter']:6.1f} B/counter "
                f"({row['encoding']}, {row['fields_per_shard']} fields per hash)"
            )
    out = {"pending_counters": pending, "by_shards": rows, "read_model": []}
    for columns in (False, True):
        # a page row costs the same per row at any count; 200k of them fill in ~1 min
        rows = min(read_model_rows, PAGE_ROWS) if columns else read_model_rows
        row = read_model(env, rows, columns)
        out["read_model"].append(row)
        if progress:
            progress.note(f"read model, {row['kind']}: {row['bytes_per_row']:.0f} B/row")
    return out


# What the site's page keeps of a post (app/content.py PAGE_COLUMNS, app/kinds.py)
PAGE_COUNTERS = ("view_count", "likes_count", "collects_count", "shares_count", "comments_count")
PAGE_COUNTERS += ("bot_view_count",)
TITLE = "A title of sixty characters, about what a post's title takes"
CONTENT_BYTES = 1000
PAGE_ROWS = 200_000


def read_model(env, rows: int, columns: bool, content_bytes: int = CONTENT_BYTES) -> dict:
    """Bytes per row of the read model, for ``rows`` rows (see the module docstring)."""
    r = env.redis()
    for key in r.scan_iter(f"{{{PREFIX}*"):
        r.delete(key)
    registry = Registry([Counter("posts", c, f"p{i}") for i, c in enumerate(PAGE_COUNTERS)])
    counters = Counters(r, None, registry, shards=16, scope=PREFIX)
    model = counters.read_model
    names = ("unique_viewers", "title", "content", "author_id", "created_at") if columns else ()
    fields = model.fields(list(registry), names)
    when = dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc)
    page = [17, TITLE, "x" * content_bytes, 42, when] if columns else []
    before = r.info("memory")["used_memory"]
    for start in range(1, rows + 1, LOAD_CHUNK):
        # an empty Redis: state version 0, nothing released yet (applied seq 0)
        calls = [
            model.fill_call("posts", i, "0", 0, fields, [i % 1000, 3, 1, 0, 2, 0, *page])
            for i in range(start, min(start + LOAD_CHUNK, rows + 1))
        ]
        assert model.fill(calls) == len(calls), "a fill was fenced off"
    after = r.info("memory")["used_memory"]
    sample = [
        r.memory_usage(counters.keys.read_model("posts", i), samples=0)
        for i in range(1, rows + 1, max(1, rows // 200))
    ]
    for key in r.scan_iter(f"{{{PREFIX}*", count=10_000):
        r.delete(key)
    r.close()
    return {
        "kind": f"page row ({content_bytes} B body)" if columns else "counts only",
        "rows": rows,
        "fields": len(fields) + 1,
        "bytes_per_row": round((after - before) / rows, 1),
        "memory_usage_per_row": round(sum(sample) / len(sample), 1),
        "total_mb": round((after - before) / 2**20, 1),
    }
