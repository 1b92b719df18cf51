"""The read model (engine/readmodel.py): a row read from Redis alone, and exact.

Every test compares what a read returns with what Postgres holds after the final flush,
on real Redis and Postgres servers; the faults (a restart from an older dump, a wipe,
SCRIPT FLUSH, an eviction, a flusher SIGKILLed at each stage) are done for real.
"""

import datetime as dt
import random
import signal
import threading

import pytest
import sqlalchemy as sa

from engine import Counters
from engine.readmodel import decode, encode
from harness.redis_server import RedisProcess
from tests.engine.conftest import REGISTRY, seed, sql_statements, stored
from tests.engine.test_faults import run_victim, wait_out_victim_lock

COLUMNS = ("title", "created_at")


def read(counters: Counters, ids, columns=COLUMNS):
    return counters.read_rows("items", ids, columns)


def expected(sql, ids) -> dict[int, dict[str, int]]:
    hits, likes = stored(sql, "items", "hits"), stored(sql, "items", "likes")
    return {i: {"hits": hits[i], "likes": likes[i]} for i in ids}


def counts(found) -> dict[int, dict[str, int]]:
    return {i: c for i, (c, _) in found.items()}


def test_a_row_read_once_is_read_again_without_sql(counters, sql):
    ids = seed(sql, "items", 3)
    with sql.begin() as conn:
        conn.execute(
            sa.text("UPDATE items SET title = 'hello', hits = 7 WHERE id = :i"), {"i": ids[0]}
        )
    counters.incr_many([("items.hits", i, 2) for i in ids])
    with sql_statements(sql) as cold:
        first = read(counters, ids)
    with sql_statements(sql) as warm:
        second = read(counters, ids)
    assert len(cold) == 1 and warm == []
    assert second == first
    assert counts(second) == {ids[0]: {"hits": 9, "likes": 0}} | {
        i: {"hits": 2, "likes": 0} for i in ids[1:]
    }
    row = second[ids[0]][1]
    assert row["title"] == "hello"
    assert isinstance(row["created_at"], dt.datetime) and row["created_at"].tzinfo is not None


def test_a_flush_folds_its_batch_into_the_read_model_as_it_releases_it(counters, sql):
    ids = seed(sql, "items", 20)
    read(counters, ids)  # fills every row
    for round_ in range(3):
        counters.incr_many([("items.hits", i, i + round_) for i in ids])
        counters.incr_many([("items.likes", i, 1) for i in ids[::2]])
        with sql_statements(sql) as before_flush:
            live = counts(read(counters, ids))
        counters.flush_all()
        with sql_statements(sql) as after_flush:
            found = counts(read(counters, ids))
        assert found == live == expected(sql, ids)
        assert before_flush == [] and after_flush == []


def test_a_fill_racing_a_release_is_fenced_off(counters, sql):
    (i,) = seed(sql, "items", 1)
    counters.incr("items.hits", i, 5)
    model = counters.read_model
    fields = model.fields(REGISTRY.of_table("items"), ())
    version = model.parse(_read_reply(counters, i, fields), 2)[0]
    stale = stored(sql, "items", "hits")[i]  # read "from Postgres" before the flush
    counters.flush_all()  # releases a batch: bumps the version, sets the released seq
    applied = _applied_seq(sql, counters, i)
    call = model.fill_call("items", i, version, applied, fields, [stale, 0])
    assert model.fill([call]) == 0
    assert counts(read(counters, [i], ())) == {i: {"hits": 5, "likes": 0}}


def test_a_fill_while_postgres_holds_an_unreleased_batch_is_fenced_off(make_counters, r, sql):
    """Between a flush's commit and its release, Postgres holds the batch and Redis still
    has it inflight: a read then is exact, and fills nothing."""
    ids = seed(sql, "items", 5)
    reads, statements = [], []

    def hook(stage, shard):
        if stage == "committed":
            with sql_statements(sql) as sent:
                reads.append(counts(read(reader, ids, ())))
                reads.append(counts(read(reader, ids, ())))
            statements.append(len(sent))

    reader = make_counters(shards=1)
    flusher = make_counters(shards=1, hook=hook)
    flusher.incr_many([("items.hits", i, 3) for i in ids])
    flusher.flush_all()
    want = {i: {"hits": 3, "likes": 0} for i in ids}
    assert reads == [want, want]
    assert statements == [2]  # neither read filled the model: both asked Postgres
    with sql_statements(sql) as sent:
        read(reader, ids, ())  # fills now
        assert counts(read(reader, ids, ())) == want
    assert len(sent) == 1


def test_reconcile_deletes_and_edits_void_the_rows_they_change(counters, sql):
    items = seed(sql, "items", 3)
    with sql.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO item_likes (item_id, user_id) VALUES (:i, 1), (:i, 2)"),
            {"i": items[0]},
        )
    read(counters, items)  # filled with likes = 0: the drift the reconcile fixes
    counters.reconcile(["items.likes"])
    assert counts(read(counters, items))[items[0]]["likes"] == 2
    with sql.begin() as conn:
        conn.execute(sa.text("UPDATE items SET title = 'edited' WHERE id = :i"), {"i": items[1]})
        conn.execute(sa.text("DELETE FROM items WHERE id = :i"), {"i": items[2]})
    counters.changed("items", [items[1]])
    counters.deleted("items", [items[2]])
    found = read(counters, items)
    assert found[items[1]][1]["title"] == "edited"
    assert items[2] not in found


def test_a_wiped_or_evicted_row_falls_back_to_postgres_and_refills(counters, r, sql):
    ids = seed(sql, "items", 4)
    counters.incr_many([("items.hits", i, 4) for i in ids])
    read(counters, ids)
    counters.flush_all()
    r.delete(counters.keys.read_model("items", ids[0]))  # what an eviction does
    want = expected(sql, ids)
    with sql_statements(sql) as sent:
        assert counts(read(counters, ids)) == want
        assert counts(read(counters, ids)) == want
    assert len(sent) == 1
    r.flushdb()  # a wipe: deltas, index, layout and read model all gone
    counters.incr_many([("items.hits", i, 1) for i in ids])
    assert counts(read(counters, ids)) == {i: {"hits": 5, "likes": 0} for i in ids}
    counters.flush_all()
    assert counts(read(counters, ids)) == expected(sql, ids) == counts(read(counters, ids))


def test_a_redis_that_lost_its_scripts_is_not_trusted(counters, r, sql):
    ids = seed(sql, "items", 2)
    read(counters, ids)
    r.script_flush()  # what a restart or a failover does to the script cache
    with sql_statements(sql) as sent:
        read(counters, ids)
    assert len(sent) == 1


def test_another_scope_on_the_same_redis_has_its_own_read_script(r, sql):
    ids = seed(sql, "items", 2)
    one = Counters(r, sql, REGISTRY, shards=2, scope="one")
    two = Counters(r, sql, REGISTRY, shards=2, scope="two")
    read(one, ids)
    read(two, ids)
    r.script_flush()
    read(one, ids)  # loads scope one's script: scope two must still see its NOSCRIPT
    with sql_statements(sql) as sent:
        read(two, ids)
    assert len(sent) == 1


def test_concurrent_increments_flushes_and_reads_stay_within_what_was_acked(make_counters, sql):
    """Readers, writers and a flusher at once: every read lies between the increments
    acknowledged before it started and those sent before it ended."""
    ids = seed(sql, "items", 6)
    writer, flusher = make_counters(shards=2), make_counters(shards=2)
    readers = [make_counters(shards=2) for _ in range(2)]
    acked = dict.fromkeys(ids, 0)
    sent = dict.fromkeys(ids, 0)
    lock, stop, errors = threading.Lock(), threading.Event(), []

    def write():
        rng = random.Random(1)
        for _ in range(1500):
            i = rng.choice(ids)
            with lock:
                sent[i] += 1
            writer.incr("items.hits", i)
            with lock:
                acked[i] += 1
        stop.set()

    def flush():
        while not stop.is_set():
            flusher.flush_all()

    def check(reader):
        while not stop.is_set():
            with lock:
                low = dict(acked)
            found = counts(read(reader, ids, ()))
            with lock:
                high = dict(sent)
            for i in ids:
                if not low[i] <= found[i]["hits"] <= high[i]:
                    errors.append((i, low[i], found[i]["hits"], high[i]))

    threads = [threading.Thread(target=write), threading.Thread(target=flush)]
    threads += [threading.Thread(target=check, args=(c,)) for c in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    flusher.flush_all()
    assert errors == []
    assert stored(sql, "items", "hits") == acked
    assert counts(read(readers[0], ids, ())) == expected(sql, ids)


@pytest.mark.parametrize("stage", ["claimed", "numbered", "applied", "committed"])
def test_a_flusher_killed_at_each_stage_leaves_the_read_model_exact(
    stage, make_counters, sql, engine_db, victim_redis, r
):
    counters = make_counters(shards=2)
    ids = seed(sql, "items", 10)
    read(counters, ids)
    counters.incr_many([("items.hits", i, i) for i in ids])
    assert run_victim(engine_db.url, 2, stage, victim_redis) == -signal.SIGKILL
    want = {i: {"hits": i, "likes": 0} for i in ids}
    assert counts(read(counters, ids)) == want
    counters.incr_many([("items.hits", i, 1) for i in ids])
    wait_out_victim_lock(counters, r)
    counters.flush_all()
    counters.flush_all()
    assert (
        counts(read(counters, ids))
        == expected(sql, ids)
        == {i: {"hits": i + 1, "likes": 0} for i in ids}
    )


def test_a_redis_back_from_an_older_dump_is_read_as_postgres_has_it(server, sql):
    ids = seed(sql, "items", 5)
    c = Counters(server.client(), sql, REGISTRY, shards=1, flush_lock_ttl_ms=300)
    c.incr_many([("items.hits", i, 1) for i in ids])
    read(c, ids)
    c.flush_all()
    assert counts(read(c, ids)) == expected(sql, ids)
    server.checkpoint()  # the dump holds read models of hits = 1, and nothing pending
    c.incr_many([("items.hits", i, 10) for i in ids])
    c.flush_all()
    read(c, ids)
    server.rollback()
    c = Counters(server.client(), sql, REGISTRY, shards=1, flush_lock_ttl_ms=300)
    assert counts(read(c, ids)) == expected(sql, ids) == {i: {"hits": 11, "likes": 0} for i in ids}
    # what lands before a flush has seen the rollback is lost with the restored batch
    # (engine/lineage.py): the read says what Postgres holds either way
    c.incr_many([("items.hits", i, 100) for i in ids])
    assert counts(read(c, ids)) == expected(sql, ids)
    c.flush_all()
    assert counts(read(c, ids)) == expected(sql, ids)
    before = stored(sql, "items", "hits")
    c.incr_many([("items.hits", i, 1000) for i in ids])
    c.flush_all()
    assert counts(read(c, ids)) == expected(sql, ids)
    assert stored(sql, "items", "hits") == {i: before[i] + 1000 for i in ids}
    with sql_statements(sql) as sent:
        read(c, ids)
    assert sent == []  # filled again once the flush showed Redis and Postgres agree


def test_evicted_read_models_never_take_a_delta_with_them(tmp_path, sql):
    """Under volatile-lru a full Redis evicts read models (they have a TTL), never the
    buffer's keys: counts stay exact."""
    proc = RedisProcess.rdb(tmp_path / "redis")
    proc.start()
    try:
        client = proc.client()
        ids = seed(sql, "items", 3000)
        with sql.begin() as conn:
            conn.execute(sa.text("UPDATE items SET title = repeat('x', 400)"))
        c = Counters(client, sql, REGISTRY, shards=4)
        c.incr_many([("items.hits", i, 1) for i in ids])
        used = client.info("memory")["used_memory"]
        client.config_set("maxmemory-policy", "volatile-lru")
        client.config_set("maxmemory", used + 600_000)
        for chunk in range(0, len(ids), 100):
            read(c, ids[chunk : chunk + 100])
        assert client.info("stats")["evicted_keys"] > 0
        c.incr_many([("items.hits", i, 2) for i in ids])
        assert counts(read(c, ids)) == {i: {"hits": 3, "likes": 0} for i in ids}
        client.config_set("maxmemory", 0)
        c.flush_all()
        assert (
            counts(read(c, ids)) == expected(sql, ids) == {i: {"hits": 3, "likes": 0} for i in ids}
        )
    finally:
        proc.stop()


def test_column_values_come_back_as_they_went_in():
    when = dt.datetime(2026, 12, 7, 18, 30, tzinfo=dt.timezone.utc)
    for value in (when, when.date(), "tïtle", 42, 1.5, None, True):
        assert decode(encode(value).encode()) == value
    with pytest.raises(TypeError):
        encode(b"bytes")


def test_read_model_off_reads_postgres_every_time(make_counters, sql):
    counters = make_counters(read_model_ttl_s=0)
    ids = seed(sql, "items", 2)
    with sql_statements(sql) as sent:
        read(counters, ids)
        read(counters, ids)
    assert len(sent) == 2


def _read_reply(counters, row_id, fields):
    from engine.buffer import RoundTrip

    trip = RoundTrip(counters.buffer.redis)
    counters.read_model.queue(trip, "items", row_id, fields)
    return trip.execute()[0]


def _applied_seq(sql, counters, row_id) -> int:
    shard = counters.keys.shard_of(row_id)
    query = "SELECT applied_seq FROM counter_shards WHERE scope = :s AND shard = :h"
    with sql.connect() as conn:
        return conn.execute(sa.text(query), {"s": counters.scope, "h": shard}).scalar()


def test_readers_of_different_columns_share_one_row(counters, sql):
    ids = seed(sql, "items", 2)
    read(counters, ids, ("title",))
    read(counters, ids, ("created_at",))  # adds its column to the rows
    with sql_statements(sql) as sent:
        read(counters, ids, ("title",))
        read(counters, ids, ("created_at", "title"))
    assert sent == []
