"""A claimed batch, as Redis returns it, split into per-table, per-column arrays."""

import redis

from engine import Counter, Registry
from engine.batch import split
from engine.buffer import Buffer
from engine.keys import Keys
from tests.engine.conftest import REDIS_DB
from tests.servers import redis_url


def arrays(batch) -> dict:
    """``{table: {column: {id: delta}}}`` from the split batch's array literals."""
    out = {}
    for table, deltas in batch.tables.items():
        for col in deltas.columns:
            ids, values = (lit.strip("{}").split(",") for lit in col.arrays())
            out.setdefault(table, {})[col.column] = dict(
                zip(map(int, ids), map(int, values), strict=True)
            )
    return out


def test_split_matches_every_field_to_its_counter(r):
    # codes that share prefixes ("ih"/"ihx") must not capture each other's fields
    registry = Registry(
        [
            Counter("items", "hits", "ih"),
            Counter("items", "likes", "ihx"),
            Counter("notes", "hits", "n"),
        ]
    )
    buffer = Buffer(r, Keys(shards=1))
    pending = buffer.keys.pending(0)
    expected = {"items": {"hits": {}, "likes": {}}, "notes": {"hits": {}}}
    for i in range(1, 301):
        r.hincrby(pending, f"{i}:ih", i)
        expected["items"]["hits"][i] = i
        if i % 3 == 0:
            r.hincrby(pending, f"{i}:ihx", -i)  # unlikes outnumbering likes
            expected["items"]["likes"][i] = -i
        if i % 5 == 0:
            r.hincrby(pending, f"{i * 1000}:n", 7)
            expected["notes"]["hits"][i * 1000] = 7
    r.hincrby(pending, "12:gone", 1)  # a code no counter has any more
    r.hincrby(pending, "13:gone", 1)
    r.hset(pending, "_t", 1234)
    claim = buffer.claim(0, "t")
    batch = split(registry, claim.fields)
    assert arrays(batch) == expected
    assert batch.size == 300 + 100 + 60 + 2 and batch.unknown == 2
    assert batch.oldest_ms == 1234
    assert batch.tables["items"].row_count() == 300
    assert batch.tables["items"].fields_per_row()[3] == 2
    assert len(claim.deltas) == batch.size and claim.deltas["3:ihx"] == -3


def test_claims_from_a_client_that_decodes_responses_split_the_same(make_counters, r):
    counters = make_counters(shards=1)
    counters.incr_many([("items.hits", 5, 2), ("items.likes", 5, 1), ("notes.hits", 9, 4)])
    with redis.Redis.from_url(redis_url(REDIS_DB), decode_responses=True) as text:
        claim = Buffer(text, counters.keys).claim(0, "t")
    batch = split(counters.registry, claim.fields)
    assert arrays(batch) == {"items": {"hits": {5: 2}, "likes": {5: 1}}, "notes": {"hits": {9: 4}}}
    assert batch.unknown == 0 and batch.size == 3


def test_bucket_fields_go_to_their_counters_buckets_and_others_are_dropped(r):
    registry = Registry(
        [Counter("items", "hits", "ih", buckets=True), Counter("items", "likes", "ihx")]
    )
    buffer = Buffer(r, Keys(shards=1))
    pending = buffer.keys.pending(0)
    for i in range(1, 41):
        r.hincrby(pending, f"{i}:ih", 2)
        r.hincrby(pending, f"{i}:ih@{490000 + i % 2}", 2)
        r.hincrby(pending, f"{i}:ihx", 1)
        r.hincrby(pending, f"{i}:ihx@490000", 1)  # a code that keeps no buckets (any more)
    batch = split(registry, buffer.claim(0, "t").fields)
    assert arrays(batch) == {
        "items": {"hits": dict.fromkeys(range(1, 41), 2), "likes": dict.fromkeys(range(1, 41), 1)}
    }
    (hits,) = batch.buckets
    assert (hits.table, hits.column) == ("items", "hits")
    rows = zip(hits.ids, hits.hours, hits.deltas, strict=True)
    got = {(int(i), int(h)): int(d) for i, h, d in rows}
    assert got == {(i, 490000 + i % 2): 2 for i in range(1, 41)}
    assert batch.size == 80 and batch.unknown == 40
